"""Every YAML file the recipe reads goes through one loader, which refuses a Python tag or a syntax error
with an error naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from etser.learn import trainconf, tune
from etser.features import upstream
from etser.tasks import load_tasks
from etser.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
TAGGED = "head: superb\nmax_epochs: !!python/object/apply:os.system ['true']\n"


def test_python_tag_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "conf with space.yaml"
    path.write_text(TAGGED)
    with pytest.raises(ValueError, match=rf"^{path}, line 2 column 13: not a plain-data YAML file: "
                                         r"could not determine a constructor for the tag"):
        read_yaml(path)


def test_syntax_error_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=rf"^{path}, line 2 column 1: not a plain-data YAML file"):
        read_yaml(path)


@pytest.mark.parametrize("load", [
    lambda p: trainconf.load_config(p),
    lambda p: load_tasks(p),
    lambda p: tune.load_search_space(p),
    lambda p: upstream.load_config(str(p)),
])
def test_config_loaders_name_the_file(tmp_path, load):
    path = tmp_path / "x.yaml"
    path.write_text(TAGGED)
    with pytest.raises(Exception, match=rf"{path}, line 2 column 13: not a plain-data YAML file"):
        load(path)


def test_conf_override_with_a_python_tag_is_named():
    from etser.caption import config as caption_config

    item = "max_epochs=!!python/object/apply:os.system ['true']"
    for load in (trainconf.load_config, caption_config.load_config):
        with pytest.raises(ValueError, match=r"--conf \"max_epochs=!!python.*\", line 1 column 1: not a "
                                             r"plain-data YAML value: could not determine a constructor"):
            load(ROOT / "conf" / "train" / "superb.yaml" if load is trainconf.load_config else None, [item])


def test_no_other_yaml_loader():
    """yaml.safe_load / yaml.load anywhere but etser.yamlfile would bypass the check."""
    found = []
    for path in sorted((ROOT / "etser").rglob("*.py")) + sorted((ROOT / "local").rglob("*.py")):
        if path.name == "yamlfile.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "yaml"
                    and node.func.attr in ("load", "safe_load", "full_load", "unsafe_load")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"YAML loaded outside etser.yamlfile.read_yaml: {found}"

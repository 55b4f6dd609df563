"""A user-defined upstream, in a file outside the etser package, plugged in by a YAML file
alone, runs through stages 2-4 of the recipe like a shipped one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers_faults import ROOT, recipe_env, run_recipe

from etser.datadir import read_table
from etser.tasks import get_task

PLUGIN_PY = ROOT / "tests" / "conf" / "upstream" / "tiny_plugin.py"


def _workdir(path: Path) -> Path:
    """Like egs/emotiontalk/, but conf/upstream/ holds a copy of the shipped configs plus the user's one."""
    path.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "utils"):
        (path / name).symlink_to(ROOT / name)
    (path / "conf").mkdir()
    for p in (ROOT / "conf").iterdir():
        if p.name != "upstream":
            (path / "conf" / p.name).symlink_to(p)
    shutil.copytree(ROOT / "conf" / "upstream", path / "conf" / "upstream")
    # The user's model code lives in their own folder, not in etser and not in conf/.
    (path / "my_models").mkdir()
    shutil.copy(PLUGIN_PY, path / "my_models" / "tiny_net.py")
    (path / "conf" / "upstream" / "my_tiny.yaml").write_text(
        "factory: my_models/tiny_net.py:build\n"
        "args: {dim: 16, layers: 3}\n"
        "batch: {policy: padded}\n")
    return path


def test_user_upstream_from_a_file_runs_stages_2_to_4(tmp_path, small_release):
    w = _workdir(tmp_path / "work")
    common = ("--upstream", "my_tiny", "--tasks", "speech_four", "--seeds", "1", "--nj", "2")
    r = run_recipe(w, "--db_root", small_release, "--stop_stage", "1", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_recipe(w, "--stage", "2", "--stop_stage", "4", *common, env=recipe_env())
    assert r.returncode == 0, r.stderr[-3000:]

    (tag_dir,) = (w / "dump").iterdir()
    assert tag_dir.name.startswith("my_tiny_")
    meta = json.loads((tag_dir / "test" / "meta.json").read_text())
    assert meta["upstream"] == "my_tiny" and meta["num_layers"] == 3 and meta["dim"] == 16

    task = get_task("speech_four")
    labels = read_table(w / "data" / "test" / task.label_file)
    expected = sorted(u for u, lab in labels.items() if lab in task.classes)
    exp = w / "exp" / tag_dir.name / "superb" / "speech_four" / "seed1"
    for s in ("val", "test"):
        m = json.loads((exp / f"decode_{s}" / "metrics.json").read_text())
        for key in ("wa", "ua", "macro_f1", "weighted_f1"):
            assert 0.0 <= m[key] <= 1.0, (s, key, m[key])
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["num_utts"] == len(expected)
    pred_lines = (exp / "decode_test" / "predictions.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in pred_lines[1:]) == expected

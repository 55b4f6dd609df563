"""utils/parse_options.sh, exercised the way run.sh uses it: sourced by a bash script under set -euo pipefail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARSE_OPTIONS = ROOT / "utils" / "parse_options.sh"

SCRIPT = f"""#!/usr/bin/env bash
set -euo pipefail
stage=1
stop_stage=5
foo_bar=default
tasks="speech_four multi_four"
strict=false
db_root=
help_message="Usage: demo.sh [options] <dir>
  --stage N   first stage"
. "{PARSE_OPTIONS}"
printf 'stage=%s\\n' "$stage"
printf 'stop_stage=%s\\n' "$stop_stage"
printf 'foo_bar=%s\\n' "$foo_bar"
printf 'tasks=%s\\n' "$tasks"
printf 'strict=%s\\n' "$strict"
printf 'db_root=%s\\n' "$db_root"
printf 'nargs=%s\\n' "$#"
for a in "$@"; do printf 'arg=%s\\n' "$a"; done
# parse_options.sh must not leave its helpers behind in the caller's shell
declare -F | grep -q _po_ && echo LEAK || true
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    script = tmp_path / "demo.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    return script


def run(demo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(demo), *args], capture_output=True, text=True, timeout=30)


def parsed(result: subprocess.CompletedProcess) -> tuple[dict[str, str], list[str]]:
    assert result.returncode == 0, result.stderr
    assert "LEAK" not in result.stdout
    values, rest = {}, []
    for line in result.stdout.splitlines():
        name, value = line.split("=", 1)
        if name == "arg":
            rest.append(value)
        else:
            values[name] = value
    return values, rest


def test_defaults_kept_without_options(demo):
    values, rest = parsed(run(demo))
    assert values["stage"] == "1" and values["tasks"] == "speech_four multi_four" and values["db_root"] == ""
    assert rest == []


def test_underscore_and_dash_forms_and_values_with_spaces(demo):
    values, rest = parsed(run(demo, "--stage", "3", "--foo-bar", "x y", "--tasks", "a b  c",
                              "--db_root", "/data/Emotion Talk", "--stop_stage=4"))
    assert values["stage"] == "3"
    assert values["foo_bar"] == "x y"
    assert values["tasks"] == "a b  c"
    assert values["db_root"] == "/data/Emotion Talk"
    assert values["stop_stage"] == "4"
    values, _ = parsed(run(demo, "--foo_bar", "z"))
    assert values["foo_bar"] == "z"


def test_empty_value_allowed(demo):
    values, _ = parsed(run(demo, "--foo_bar", ""))
    assert values["foo_bar"] == ""


def test_stops_at_first_positional_argument(demo):
    values, rest = parsed(run(demo, "--stage", "2", "data/train", "--stage", "7", "x y"))
    assert values["stage"] == "2"
    assert values["nargs"] == "4"
    assert rest == ["data/train", "--stage", "7", "x y"]


def test_double_dash_ends_options(demo):
    values, rest = parsed(run(demo, "--stage", "2", "--", "--stop_stage", "1"))
    assert values["stage"] == "2" and values["stop_stage"] == "5"
    assert rest == ["--stop_stage", "1"]


def test_value_that_looks_like_an_option(demo):
    values, _ = parsed(run(demo, "--foo_bar", "-h"))
    assert values["foo_bar"] == "-h"


@pytest.mark.parametrize("args", [("--nosuch", "1"), ("--no-such", "1"), ("--nosuch=1",)])
def test_unknown_option_is_an_error(demo, args):
    result = run(demo, *args)
    assert result.returncode == 1
    assert args[0].split("=")[0] in result.stderr
    assert "unknown option" in result.stderr
    assert "stage=" not in result.stdout


def test_invalid_option_name_is_an_error(demo):
    result = run(demo, "--a;b", "1")
    assert result.returncode == 1
    assert "--a;b" in result.stderr


def test_missing_value_is_an_error(demo):
    result = run(demo, "--stage")
    assert result.returncode == 1
    assert "--stage" in result.stderr and "needs a value" in result.stderr


def test_boolean_takes_true_or_false(demo):
    values, _ = parsed(run(demo, "--strict", "true"))
    assert values["strict"] == "true"
    result = run(demo, "--strict", "yes")
    assert result.returncode == 1
    assert "--strict" in result.stderr and "true or false" in result.stderr
    # Kaldi convention: no bare boolean flags; the next argument is taken as the value.
    result = run(demo, "--strict", "data/train")
    assert result.returncode == 1


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_help_message_and_exits_zero(demo, flag):
    result = run(demo, "--stage", "2", flag, "--nosuch", "1")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: demo.sh [options] <dir>\n  --stage N   first stage")
    assert "stage=" not in result.stdout


def test_config_file(demo, tmp_path):
    conf = tmp_path / "my.conf"
    conf.write_text(
        "# a comment line\n"
        "\n"
        "stage=2   # trailing comment\n"
        "stop-stage = 4\n"
        'tasks="speech_all multi_all"  # quoted, with spaces\n'
        "foo_bar=a#b\n"
        "db_root='/x y'\n"
        "strict=true"  # no final newline
    )
    values, _ = parsed(run(demo, "--config", str(conf)))
    assert values == {"stage": "2", "stop_stage": "4", "tasks": "speech_all multi_all", "foo_bar": "a#b",
                      "db_root": "/x y", "strict": "true", "nargs": "0"}


def test_command_line_wins_over_config(demo, tmp_path):
    conf = tmp_path / "my.conf"
    conf.write_text("stage=2\nstop_stage=3\n")
    values, _ = parsed(run(demo, "--config", str(conf), "--stage", "4"))
    assert values["stage"] == "4" and values["stop_stage"] == "3"
    # also when the option comes before --config (Kaldi: configs first, then the command line)
    values, _ = parsed(run(demo, "--stage", "4", "--config", str(conf)))
    assert values["stage"] == "4" and values["stop_stage"] == "3"


def test_later_config_wins_over_earlier(demo, tmp_path):
    (tmp_path / "a.conf").write_text("stage=2\nstop_stage=2\n")
    (tmp_path / "b.conf").write_text("stage=3\n")
    values, _ = parsed(run(demo, "--config", str(tmp_path / "a.conf"), "--config", str(tmp_path / "b.conf")))
    assert values["stage"] == "3" and values["stop_stage"] == "2"


def test_missing_config_is_an_error(demo, tmp_path):
    result = run(demo, "--config", str(tmp_path / "absent.conf"))
    assert result.returncode == 1
    assert "absent.conf" in result.stderr


def test_config_with_unknown_name_or_bad_line_is_an_error(demo, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("stage=2\nnosuch=1\n")
    result = run(demo, "--config", str(conf))
    assert result.returncode == 1
    assert f"{conf}:2" in result.stderr and "nosuch" in result.stderr
    conf.write_text("stage 2\n")
    result = run(demo, "--config", str(conf))
    assert result.returncode == 1
    assert f"{conf}:1" in result.stderr
    conf.write_text("strict=maybe\n")
    result = run(demo, "--config", str(conf))
    assert result.returncode == 1
    assert "true or false" in result.stderr


def test_run_directly_prints_usage():
    result = subprocess.run(["bash", str(PARSE_OPTIONS), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "sourced" in result.stdout.lower() or "source it" in result.stdout.lower()


def test_run_sh_rejects_unknown_option(repo_root):
    """The recipe's own driver: an unknown option fails before any stage runs."""
    result = subprocess.run(["bash", "run.sh", "--no_such_option", "1"], cwd=repo_root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--no_such_option" in result.stderr
    result = subprocess.run(["bash", "run.sh", "--help"], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--stage" in result.stdout

"""Plugins as a new user adds them, run through ./run.sh: a user-defined upstream in a file outside the
etser package, plugged in by a YAML file alone (stages 2-4); a copy of a fusion algorithm's file and YAML under
a new name (stages 3-5, its RESULTS.md row); a continuous task declared only in a copied tasks YAML, with the
superb head (stages 3-5, its continuous metrics in RESULTS.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers_faults import ROOT, recipe_env, run_recipe

from etser.datadir import read_table, write_table
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


# ---- a fusion algorithm and a task added as a new user would, run through ./run.sh stages 3-5 ----
# A copy of the repository (its tracked files), with the synthetic three-stream corpus of the fusion recipe
# test in data/ and dump/ (stage 1 and 2's contracts), the speech stream under the dump tag of fbank_no_cmvn
# so that the speech classifier finds it as a cached stage-2 run.
SPEECH_UP = "fbank_no_cmvn"
AROUSAL_YAML = ("  arousal: {label_file: utt2arousal, kind: continuous, range: [1, 5], center: 3, "
                "title: Arousal}\n")


@pytest.fixture(scope="module")
def copied_repo(tmp_path_factory):
    import subprocess

    from etser.features.upstream import config_tag
    from tests.test_fusion_recipe import make_fusion_corpus

    w = tmp_path_factory.mktemp("plugin") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (w / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, w / f)
    (w / ".venv").symlink_to((ROOT / ".venv").resolve())
    data, dumps = make_fusion_corpus(w)
    tag = config_tag(w / "conf" / "upstream" / f"{SPEECH_UP}.yaml")
    dumps["speech"].rename(w / "dump" / tag)
    for scp in (w / "dump" / tag).rglob("*.scp"):   # its scp files name their arks by absolute path
        scp.write_text(scp.read_text().replace(str(dumps["speech"]), str(w / "dump" / tag)))
    # arousal in [1, 5], centred on 3, following the speech stream's class bit (as the sentiment label does)
    for d in data.iterdir():
        sent = read_table(d / "utt2sentiment")
        write_table(d / "utt2arousal", {u: f"{3 + 1.5 * float(v):.2f}" for u, v in sent.items()})
    return w, f"speech={SPEECH_UP} text=dump/text visual=dump/visual"


def _results_row(results: Path, name: str) -> str:
    rows = [line for line in results.read_text().splitlines() if line.startswith("|") and name in line]
    assert rows, f"no {name} row in {results}:\n{results.read_text()}"
    return rows[0]


def test_a_copied_fusion_algorithm_runs_through_the_recipe_by_its_new_name(copied_repo):
    w, streams = copied_repo
    shutil.copy(w / "etser/models/fusion/tfn.py", w / "etser/models/fusion/tfn_copy.py")
    shutil.copy(w / "conf/fusion/tfn.yaml", w / "conf/fusion/tfn_copy.yaml")
    r = run_recipe(w, "--stage", "3", "--upstreams", SPEECH_UP, "--tasks", "multi_four", "--seeds", "1",
                   "--nj", "2", "--fusion", "tfn_copy", "--fusion_streams", streams, "--fusion_tasks",
                   "multi_four", "--expdir", "exp_fusion", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (exp,) = (w / "exp_fusion").glob("fusion_*/tfn_copy/multi_four/seed1")
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["num_utts"] == 24 and 0.0 <= m["weighted_f1"] <= 1.0
    assert "tfn_copy" in _results_row(w / "exp_fusion" / "RESULTS.md", "tfn_copy")


def test_a_continuous_task_from_a_copied_tasks_yaml_runs_with_the_superb_head(copied_repo):
    w, _ = copied_repo
    tasks_conf = w / "my_tasks.yaml"
    text = (w / "conf" / "tasks.yaml").read_text()
    assert "\nmultimodal:" in text  # the section after tasks: the new task ends the tasks list
    tasks_conf.write_text(text.replace("\nmultimodal:", "\n" + AROUSAL_YAML + "multimodal:", 1))
    r = run_recipe(w, "--stage", "3", "--upstreams", SPEECH_UP, "--heads", "superb", "--tasks", "arousal",
                   "--tasks_conf", tasks_conf, "--seeds", "1", "--nj", "2", "--fusion", "",
                   "--expdir", "exp_arousal", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (exp,) = (w / "exp_arousal").glob(f"{SPEECH_UP}_*/superb/arousal/seed1")
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["kind"] == "continuous" and m["num_utts"] == 24, m
    # it learns on a range centred off 0 (the model predicts the offset from the centre; before, the head started
    # ~3 below every target and kept epoch 1: MAE 3.1): about half the training mean's error here (0.51 vs 1.05)
    assert m["mae"] < 0.8 * m["constant"]["train_mean"]["mae"], m
    # its own table under its title, with the continuous kind's columns, one row for this upstream x head
    text = (w / "exp_arousal" / "RESULTS.md").read_text()
    section = text.split("### Arousal (`arousal`, kind continuous)", 1)
    assert len(section) == 2, text
    lines = [line for line in section[1].split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Features", "Head", "WF1 (sign)", "Acc-2", "MAE",
                                                                   "r", "CCC"], text
    (row,) = [line for line in lines[2:]]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == [exp.parts[-4], "superb"], row
    assert f"{m['mae']:.3f}" == cells[4], (row, m)

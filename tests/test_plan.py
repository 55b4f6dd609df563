"""Stage 3/4 job planning (etser.launch.plan): upstream x head x task x seed, default tasks by modality, refusals."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from etser.launch import plan
from tests.helpers_feats import make_frames, write_dump

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    rng = np.random.default_rng(0)
    frames = {f"S01-u{i}": make_frames(rng, i % 4, 2, 4) for i in range(4)}
    write_dump(root / "dump" / "sp_1234" / "train", frames, None)
    write_dump(root / "dump" / "tx_5678" / "train", frames, None, modality="text")
    return root, [str(root / "dump" / "sp_1234"), str(root / "dump" / "tx_5678")]


def test_default_tasks_follow_the_modality(dumps):
    _, dirs = dumps
    runs = plan.plan_runs(dirs, ["superb", "paper"], [1, 2], conf_root=ROOT)
    assert len(runs) == 2 * 2 * 4 * 2
    speech = [r for r in runs if r.tag == "sp_1234"]
    text = [r for r in runs if r.tag == "tx_5678"]
    assert list(dict.fromkeys(r.task for r in speech)) == ["speech_four", "multi_four", "speech_all", "multi_all"]
    assert list(dict.fromkeys(r.task for r in text)) == ["text_four", "multi_four", "text_all", "multi_all"]
    assert {r.modality for r in text} == {"text"}
    assert text[0].exp_dir == "exp/tx_5678/superb/text_four/seed1"
    assert len({r.exp_dir for r in runs}) == len(runs)
    # --tasks replaces every upstream's list
    runs = plan.plan_runs(dirs, ["superb"], [1], tasks=["multi_all"], conf_root=ROOT)
    assert [r.exp_dir for r in runs] == ["exp/sp_1234/superb/multi_all/seed1", "exp/tx_5678/superb/multi_all/seed1"]


def test_refusals_name_the_known_names(dumps):
    _, dirs = dumps
    with pytest.raises(plan.PlanError, match="unknown task.*spech_four.*known tasks: speech_four"):
        plan.plan_runs(dirs, ["superb"], [1], tasks=["spech_four"], conf_root=ROOT)
    with pytest.raises(plan.PlanError, match="unknown head.*superbb.*known: attentive mlp paper superb"):
        plan.plan_runs(dirs, ["superbb"], [1], conf_root=ROOT)
    with pytest.raises(plan.PlanError, match="trained twice"):
        plan.plan_runs(dirs[:1] * 2, ["superb"], [1], conf_root=ROOT)
    with pytest.raises(plan.PlanError, match="trained twice"):
        plan.plan_runs(dirs, ["superb"], [1, 1], conf_root=ROOT)
    with pytest.raises(plan.PlanError, match="training needs val"):
        plan.check_train_sets(["train", "test"])
    assert plan.score_sets(["train", "val", "test"]) == ["val", "test"]
    assert plan.score_sets(["val"]) == ["val"]
    with pytest.raises(plan.PlanError, match="no set to score"):
        plan.score_sets(["train"])


def test_cli_job_files_for_both_backends(dumps, tmp_path, monkeypatch):
    root, dirs = dumps
    monkeypatch.chdir(ROOT)
    out = tmp_path / "train_jobs.txt"
    assert plan.main(["train", "--feats_dirs", " ".join(dirs), "--heads", "superb", "--seeds", "1 2",
                      "--tasks", "speech_four", "--out", str(out), "--ngpu", "0", "--tasks_conf",
                      "conf/tasks.yaml"]) == 0
    text = out.read_text()
    assert text.startswith("# module: etser.learn.train\n# runs_per_job: 1\n")
    lines = [shlex.split(x) for x in text.splitlines()[2:]]
    assert len(lines) == 4
    assert lines[0][:6] == ["--config", "conf/train/superb.yaml", "--task", "speech_four", "--seed", "1"]
    assert "--tasks_conf" in lines[0] and "--overwrite" in lines[0]
    assert lines[0][lines[0].index("--on_change") + 1] == "redo"   # in the line, not in the environment
    from etser.learn.train import build_parser   # the lines are etser.learn.train arguments
    args = build_parser().parse_args(lines[3])
    assert args.exp_dir == Path("exp/tx_5678/superb/speech_four/seed2") and args.feats_dir == Path(dirs[1])
    sc = tmp_path / "score_jobs.txt"
    assert plan.main(["score", "--feats_dirs", dirs[0], "--heads", "superb", "--seeds", "1", "--sets",
                      "train val", "--out", str(sc)]) == 0
    assert sc.read_text().splitlines()[:2] == ["# module: etser.learn.score", "# runs_per_job: 6"]
    assert len(sc.read_text().splitlines()) == 2 + 4
    assert shlex.split(sc.read_text().splitlines()[2]) == ["--sets", "val", "--ngpu", "0", "--on_change", "redo",
                                                           "exp/sp_1234/superb/speech_four/seed1"]
    assert plan.main(["train", "--feats_dirs", dirs[0], "--heads", "superb", "--seeds", "1", "--sets", "train test",
                      "--out", str(tmp_path / "x.txt")]) == 1
    assert not (tmp_path / "x.txt").exists()

    # ESPnet backend: heads are conf/espnet/*.yaml of the working directory
    (tmp_path / "conf" / "espnet").mkdir(parents=True)
    (tmp_path / "conf" / "espnet" / "conformer.yaml").write_text("{}\n")
    (tmp_path / "conf" / "tasks.yaml").symlink_to(ROOT / "conf" / "tasks.yaml")
    monkeypatch.chdir(tmp_path)
    esp = tmp_path / "esp_jobs.txt"
    assert plan.main(["train", "--backend", "espnet", "--feats_dirs", dirs[0], "--heads", "conformer",
                      "--seeds", "3", "--tasks", "multi_all", "--out", str(esp), "--num_threads", "2"]) == 0
    assert esp.read_text().startswith("# module: etser.espnet_backend\n# runs_per_job: 1\n")
    assert shlex.split(esp.read_text(), comments=True) == [
        "train", "--config", "conf/espnet/conformer.yaml", "--task", "multi_all", "--seed", "3", "--data_dir", "data",
        "--feats_dir", dirs[0], "--exp_dir", "exp/sp_1234/espnet_conformer/multi_all/seed3", "--ngpu", "0",
        "--num_threads", "2", "--overwrite", "false"]
    assert plan.main(["score", "--backend", "espnet", "--feats_dirs", dirs[0], "--heads", "conformer",
                      "--seeds", "3", "--tasks", "multi_all", "--out", str(esp)]) == 0
    assert shlex.split(esp.read_text(), comments=True) == [
        "score", "--exp_dir", "exp/sp_1234/espnet_conformer/multi_all/seed3", "--sets", "val test", "--data_dir",
        "data", "--ngpu", "0"]
    assert plan.main(["train", "--backend", "espnet", "--feats_dirs", dirs[0], "--heads", "superb", "--seeds", "1",
                      "--out", str(esp)]) == 1

"""Captioning as a task kind: a caption kind is a task of kind ``caption`` declared in the tasks YAML (a new one
is YAML only), which owns its captions, selection metric, metrics and baselines."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from etser.caption.score import main as score_main
from etser.caption.train import main as train_main
from etser.launch.plan import PlanError, main as plan_main, plan_runs
from etser.tasks import load_tasks
from tests.helpers_caption import make_caption_corpus
from tests.helpers_feats import make_corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ["decoder_conf.d_model=32", "decoder_conf.ffn_dim=64", "decoder_conf.num_layers=1", "decoder_conf.nhead=2",
        "adaptor_conf.hidden_dim=32", "batch_size=8", "max_epochs=2", "average_last=null"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tasks_with_pitch(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "conf" / "tasks.yaml").read_text())
    doc["tasks"]["caption_pitch"] = {"kind": "caption", "label_file": "utt2caption_pitch", "caption_kind": "pitch",
                                     "title": "Pitch"}
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_shipped_caption_kinds_are_tasks_of_the_tasks_yaml():
    from etser.tasks.caption import caption_task, caption_tasks

    tasks = caption_tasks()
    assert list(tasks) == ["speaker", "style", "emotion", "overall"]
    assert all(t.label_file == f"utt2caption_{k}" and t.kind == "caption" for k, t in tasks.items())
    assert [tasks[k].name for k in tasks] == list(load_tasks().default_tasks("caption"))
    with pytest.raises(ValueError, match="unknown caption kind 'pitch'; use one of speaker, style"):
        caption_task("pitch")


def test_a_caption_kind_declared_only_in_a_copied_tasks_yaml_is_planned_trained_and_scored(tmp_path):
    tasks_conf = _tasks_with_pitch(tmp_path)
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6, "test": 6}, kinds=("pitch",))
    out = tmp_path / "caption_train_jobs.txt"
    common = ["--feats_dir", str(fd), "--decoders", "transformer", "--kinds", "pitch", "--data_dir", str(dd),
              "--conf_dir", str(ROOT / "conf" / "caption"), "--exp_root", str(tmp_path / "exp")]
    assert plan_main(["caption_train", *common, "--out", str(out)]) == 1   # the shipped YAML has no pitch
    assert plan_main(["caption_train", *common, "--tasks_conf", str(tasks_conf), "--out", str(out)]) == 0
    (line,) = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    argv = shlex.split(line)
    assert argv[argv.index("--kind") + 1] == "pitch" and argv[argv.index("--tasks_conf") + 1] == str(tasks_conf)
    exp = Path(argv[argv.index("--exp_dir") + 1])
    assert exp.parts[-2:] == ("pitch", "seed1")
    assert train_main([*argv, *(f"--conf={c}" for c in TINY)]) == 0
    from etser.tasks.caption import CaptionTask
    assert json.loads((exp / "done").read_text())["select_metric"] == CaptionTask.default_select_metric

    out = tmp_path / "caption_score_jobs.txt"
    assert plan_main(["caption_score", *common, "--tasks_conf", str(tasks_conf), "--out", str(out)]) == 0
    lines = [shlex.split(x) for x in out.read_text().splitlines() if not x.startswith("#")]
    assert [x[x.index("--baseline") + 1] for x in lines if "--baseline" in x] == list(CaptionTask.baselines)
    mconf = tmp_path / "metrics.yaml"
    mconf.write_text("metrics: [bleu4, rouge_l, cider_d]\ntokenization: char\n")
    for x in lines:
        x[x.index("--metrics_config") + 1] = str(mconf)
        x[x.index("--sets") + 1] = "test"
        assert score_main(x) == 0
        m = json.loads((Path(x[x.index("--exp_dir") + 1]) / "decode_test" / "metrics.json").read_text())
        assert m["kind"] == "pitch" and m["num_utts"] == 6 and m["scores"]["rouge_l"] is not None


def test_the_caption_task_owns_selection_and_baselines():
    from etser.tasks.caption import CaptionTask, caption_task

    assert CaptionTask.select_metric(None) == "rouge_l" and CaptionTask.select_metric("val_loss") == "val_loss"
    with pytest.raises(ValueError, match="select_metric must be one of val_loss, bleu4, rouge_l, cider_d"):
        CaptionTask.select_metric("ua")
    task = caption_task("style")
    assert task.selection_value({"val_loss": 2.0}, "val_loss") == -2.0
    assert task.selection_value({"val_loss": 2.0, "val_bleu4": 0.3}, "bleu4") == 0.3
    train = ["b", "a", "b", "a", "c"]   # a tie: C order
    assert task.baseline("frequent", train, 3) == ["a"] * 3
    vecs = np.eye(5)
    assert task.baseline("nearest", train, 2, vecs, vecs[[4, 0]] + 0.01) == ["c", "b"]
    with pytest.raises(ValueError, match="unknown baseline 'best'"):
        task.baseline("best", train, 1)


def test_heads_are_not_planned_on_caption_tasks(tmp_path):
    _, feats_dir = make_corpus(tmp_path, sizes={"train": 8, "val": 4, "test": 4})
    with pytest.raises(PlanError, match="caption_style are learnt by decoders, not heads"):
        plan_runs([str(feats_dir)], ["superb"], [1], ["caption_style"], conf_root=ROOT)

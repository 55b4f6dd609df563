"""Tasks from a YAML file: the shipped conf/tasks.yaml, refusals, and the classification Task's behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from etser.datadir import write_table
from etser.tasks import get_task, load_tasks, task_from_spec
from etser.tasks.classes import ClassTask


def test_shipped_tasks_and_default_lists():
    tasks = load_tasks()
    assert tasks.default_tasks("speech") == ["speech_four", "multi_four", "speech_all", "multi_all"]
    assert tasks.default_tasks("text") == ["text_four", "multi_four", "text_all", "multi_all"]
    assert tasks.default_tasks("visual") == ["video_four", "multi_four", "video_all", "multi_all"]
    four, every = get_task("video_four"), get_task("multi_all")
    assert four.title == "Visual(Four)" and four.label_file == "utt2emo_video" and four.output_size == 4
    assert every.output_size == 7 and set(four.classes) < set(every.classes) == set(four.labels)
    with pytest.raises(ValueError, match="unknown task 'speech_five'.*known tasks: speech_four"):
        get_task("speech_five")
    with pytest.raises(ValueError, match="no default task list for modality 'smell'"):
        tasks.default_tasks("smell")
    # the spec recorded in an exp dir rebuilds the same task
    assert task_from_spec(four.spec()) == four


def test_bad_task_files_are_refused(tmp_path):
    p = tmp_path / "tasks.yaml"
    p.write_text("tasks:\n  senti: {label_file: utt2sentiment, kind: regression}\n")
    with pytest.raises(ValueError, match="kind 'regression' is not implemented"):
        load_tasks(p)
    p.write_text("tasks:\n  a: {label_file: f, classes: [x, x]}\n")
    with pytest.raises(ValueError, match="distinct"):
        load_tasks(p)
    p.write_text("tasks:\n  a: {label_file: f, classes: [x, y], labels: [x]}\n")
    with pytest.raises(ValueError, match=r"classes \['y'\] are not among its labels"):
        load_tasks(p)
    p.write_text("tasks:\n  a: {label_file: f, classes: [x, y], colour: red}\n")
    with pytest.raises(ValueError, match="unknown key.*colour"):
        load_tasks(p)
    p.write_text("tasks:\n  a: {label_file: f, classes: [x, y]}\ndefaults:\n  speech: [a, b]\n")
    with pytest.raises(ValueError, match="defaults.speech names unknown task.*b"):
        load_tasks(p)
    with pytest.raises(FileNotFoundError, match="--tasks_conf"):
        load_tasks(tmp_path / "none.yaml")


def test_class_task_targets_loss_and_metrics(tmp_path):
    task = ClassTask(name="t", label_file="lab", title="T", classes=("b", "a"), labels=("a", "b", "c"))
    write_table(tmp_path / "lab", {"u1": "a", "u2": "c", "u3": "b", "u4": "a"})
    logged = []
    utts, y, left = task.read_targets(tmp_path, logged.append)
    assert utts == ["u1", "u3", "u4"] and y.tolist() == [1, 0, 1] and left == {"c": 1}
    assert "left out 1" in logged[0]
    assert task.class_weights(y).tolist() == pytest.approx([1.5, 0.75])
    logits = torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]])
    post = task.posteriors(logits)
    assert post.dtype == np.float64 and np.allclose(post.sum(1), 1)
    assert task.loss(logits, torch.as_tensor(y)).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)).item())
    m = task.metrics(y, post)
    assert m["wa"] == pytest.approx(2 / 3) and m["ua"] == pytest.approx(0.75)
    assert task.quick_metrics(y, post)["ua"] == pytest.approx(m["ua"])
    write_table(tmp_path / "lab", {"u1": "zzz"})
    with pytest.raises(ValueError, match="lab: utterance u1 has unknown label 'zzz'"):
        task.read_targets(tmp_path)

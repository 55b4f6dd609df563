"""Tasks by kind: a task of a known kind is YAML only, and any task trains with any head that reads its input."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from etser.learn import score, train
from etser.report import results
from etser.datadir import read_table, write_table
from etser.tasks import KINDS, Task, load_tasks
from tests.helpers_feats import make_corpus

ROOT = Path(__file__).resolve().parents[1]


def test_kinds_are_discovered_from_their_own_modules():
    kinds = {p.stem for p in (ROOT / "etser" / "tasks").glob("*.py") if p.stem != "__init__"}
    assert set(KINDS) == kinds
    for name, cls in KINDS.items():
        assert issubclass(cls, Task) and cls.kind == name and cls.__module__ == f"etser.tasks.{name}"
        assert cls.default_select_metric in cls.metric_names and cls.table_metric in cls.metric_names


def test_select_metric_of_another_kind_falls_to_the_task_default():
    tasks = load_tasks()
    cont, cls = tasks.get("sentiment"), tasks.get("speech_four")
    assert cont.select_metric("ua") == cont.default_select_metric      # superb.yaml says ua
    assert cls.select_metric("ua") == "ua"
    assert cont.select_metric({"classes": "wa"}) == cont.default_select_metric
    assert cont.select_metric("mae") == "mae"
    for bad in ("uaa", {"continuous": "ua"}):
        try:
            cont.select_metric(bad)
        except ValueError as e:
            assert "select_metric must be one of" in str(e)
        else:
            raise AssertionError(bad)


def test_continuous_task_declared_only_in_a_copied_yaml_trains_with_superb_and_is_scored(tmp_path):
    data_dir, feats_dir = make_corpus(tmp_path)
    doc = yaml.safe_load((ROOT / "conf" / "tasks.yaml").read_text())
    doc["tasks"]["arousal"] = {"kind": "continuous", "label_file": "utt2arousal", "range": [1, 5], "center": 3,
                               "title": "Arousal"}
    tasks_conf = tmp_path / "tasks.yaml"
    tasks_conf.write_text(yaml.safe_dump(doc, sort_keys=False))
    for set_name in ("train", "val", "test"):   # a value per utterance that follows its emotion
        labels = read_table(data_dir / set_name / "utt2emo_audio")
        order = sorted(set(labels.values()))
        write_table(data_dir / set_name / "utt2arousal",
                    {u: f"{1 + 4 * order.index(lab) / max(1, len(order) - 1):.2f}" for u, lab in labels.items()})
    exp = tmp_path / "exp" / feats_dir.name / "superb" / "arousal" / "seed1"
    argv = ["--config", str(ROOT / "conf" / "train" / "superb.yaml"), "--task", "arousal",
            "--tasks_conf", str(tasks_conf), "--data_dir", str(data_dir), "--feats_dir", str(feats_dir),
            "--exp_dir", str(exp), "--conf", "max_epochs=3"]
    assert train.main(argv) == 0
    done = json.loads((exp / "done").read_text())
    assert done["select_metric"] == "f1_weighted" and set(done["val_metrics"]) >= {"mae", "ccc", "pearson"}
    assert score.main([str(exp), "--sets", "test"]) == 0
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["kind"] == "continuous" and m["task"] == "arousal" and "constant" in m
    assert all(k in m for k in ("f1_weighted", "acc2", "mae", "pearson", "ccc"))
    text = results.write_results(tmp_path / "exp", tmp_path / "RESULTS.md", tasks_conf=tasks_conf,
                                 num_samples=10)
    section = text.split("## Tasks with metrics of their own", 1)[1]
    assert "### Arousal (`arousal`, kind continuous)" in section and "| CCC |" in section
    assert f"| {feats_dir.name} | superb |" in section


def test_a_kind_refuses_keys_and_values_it_does_not_have():
    from etser.tasks import task_from_spec

    base = {"name": "arousal", "kind": "continuous", "label_file": "utt2arousal", "range": [1, 5]}
    for extra, msg in (({"center": 7}, "center 7 must lie inside range"),
                       ({"center": "high"}, "center must be a number"),
                       ({"labels": ["a", "b"]}, "unknown key(s) labels"),
                       ({"kind": "ordinal"}, "kind 'ordinal' is not implemented (known kinds: ")):
        try:
            task_from_spec({**base, **extra}, "my_tasks.yaml")
        except ValueError as e:
            assert msg in str(e) and "my_tasks.yaml" in str(e), e
        else:
            raise AssertionError(extra)
    assert task_from_spec({**base, "center": 3}).spec()["center"] == 3.0
    assert "center" not in task_from_spec({**base, "range": [-2, 2]}).spec()   # a centre-0 task's hash unchanged


def test_the_multimodal_tables_take_their_tasks_from_the_tasks_yaml(tmp_path):
    from etser.report.fusion_results import fusion_sections

    doc = yaml.safe_load((ROOT / "conf" / "tasks.yaml").read_text())
    doc["tasks"]["valence"] = {"kind": "continuous", "label_file": "utt2valence", "range": [-2, 2], "title": "Valence"}
    doc["multimodal"] = {**doc.get("multimodal", {}), "sentiment": ["valence"]}
    tasks_conf = tmp_path / "tasks.yaml"
    tasks_conf.write_text(yaml.safe_dump(doc, sort_keys=False))
    fused = {"tag": "fusion_a+b", "head": "fusion", "algo": "attention", "task": "valence", "kind": "continuous",
             "modality": "fusion", "f1_weighted": 0.6, "acc2": 0.6, "mae": 0.8, "pearson": 0.2, "ccc": 0.1,
             "num_utts": 10, "stream_upstreams": {"speech": "a", "text": "b"}, "exp_dir": str(tmp_path / "run"), "seed": 1,
             "stream_modalities": {"speech": "speech", "text": "text"}}
    single = {**fused, "tag": "a", "head": "superb", "modality": "speech", "stream_upstreams": None, "algo": None,
              "upstream": "a"}
    text = "\n".join(fusion_sections([fused, single], "test", tasks_conf))
    assert "## Multimodal sentiment analysis" in text and "| b | a | – | attention | – | – | 60.00 | – |" in text
    assert results.own_metric_tables([fused, single], tasks_conf) == []      # shown by the sentiment table
    own = "\n".join(results.own_metric_tables([fused, single]))             # the shipped YAML: a task of its own
    assert "### valence (`valence`, kind continuous)" in own and "| a | superb |" in own and "attention" not in own
    assert fusion_sections([fused, single], "test") == []

"""Scoring: metrics against hand-computed confusion matrices, decode dir outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from etser.learn import score, train
from etser.featset import read_meta, write_meta
from tests.helpers_feats import make_corpus

ROOT = Path(__file__).resolve().parents[1]


def test_class_with_no_predictions_and_class_absent_everywhere():
    # reference \ predicted   c0 c1 c2 c3
    #   c0                     1  1  0  0
    #   c1                     0  2  0  0
    #   c2                     2  0  0  0     <- never predicted
    #   c3                     0  0  0  0     <- absent from references and predictions
    m = score.compute_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 0], num_classes=4)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert m["wa"] == pytest.approx(3 / 6)
    assert m["ua"] == pytest.approx((1 / 2 + 1 + 0) / 3)           # c3 has no recall
    # F1: c0 = 2*1/(2*1+2+1) = 0.4, c1 = 2*2/(2*2+1+0) = 0.8, c2 = 0; c3 undefined
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.4 + 2 * 0.8 + 2 * 0.0) / 6)
    pc = m["per_class"]
    assert pc["precision"][:2] == pytest.approx([1 / 3, 2 / 3]) and pc["precision"][2:] == [None, None]
    assert pc["recall"][:3] == pytest.approx([0.5, 1.0, 0.0]) and pc["recall"][3] is None
    assert pc["f1"][:3] == pytest.approx([0.4, 0.8, 0.0]) and pc["f1"][3] is None
    assert pc["support"] == [2, 2, 2, 0]
    assert m["num_utts"] == 6


def test_class_predicted_but_never_referenced():
    # reference \ predicted   c0 c1 c2
    #   c0                     2  0  1
    #   c1                     0  1  0
    #   c2                     0  0  0    <- predicted once, no references: precision 0, recall undefined
    m = score.compute_metrics([0, 0, 0, 1], [0, 0, 2, 1], num_classes=3)
    assert m["wa"] == pytest.approx(3 / 4)
    assert m["ua"] == pytest.approx((2 / 3 + 1) / 2)
    # F1: c0 = 4/(4+0+1) = 0.8, c1 = 1, c2 = 0/(0+1+0) = 0 (it counts: the system predicted it wrongly)
    assert m["macro_f1"] == pytest.approx((0.8 + 1 + 0) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 1 * 1) / 4)
    assert m["per_class"]["precision"] == pytest.approx([1.0, 1.0, 0.0])
    assert m["per_class"]["recall"][2] is None


def test_quick_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    for trial in range(30):
        c = int(rng.integers(2, 8))
        n = int(rng.integers(1, 60))
        y = rng.integers(0, c, n)
        p = np.where(rng.random(n) < 0.5, y, rng.integers(0, max(1, c - 1), n))  # some classes never predicted
        full, quick = score.compute_metrics(y, p, c), score.quick_metrics(y, p, c)
        for k in score.METRIC_NAMES:
            assert quick[k] == pytest.approx(full[k], abs=1e-12), (trial, k)


def test_confusion_text_and_predictions_round_trip(tmp_path):
    text = score.confusion_text([[3, 1], [0, 2]], ["neutral", "angry"])
    assert text.splitlines()[0].split() == ["ref\\hyp", "neutral", "angry", "total"]
    assert text.splitlines()[1].split() == ["neutral", "3", "1", "4"]
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    score.write_predictions(tmp_path / "p.txt", ["u1", "u2"], ["neutral", "neutral"], probs, ["neutral", "angry"])
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert lines[0] == "uttid label pred p_neutral p_angry"
    assert lines[2] == "u2 neutral angry 0.200000 0.800000"
    utts, labels, preds, p, classes = score.read_predictions(tmp_path / "p.txt")
    assert (utts, labels, preds, classes) == (["u1", "u2"], ["neutral"] * 2, ["neutral", "angry"], ["neutral", "angry"])
    assert np.allclose(p, probs)


def test_score_exp_writes_decode_dirs(tmp_path):
    data_dir, feats_dir = make_corpus(tmp_path, {"train": 70, "val": 28, "test": 35}, num_layers=2, dim=8,
                                      frame_layers=None)
    exp = tmp_path / "exp" / "superb" / "speech_all" / "seed1"
    argv = ["--config", str(ROOT / "conf/train/superb.yaml"), "--task", "speech_all", "--data_dir", str(data_dir),
            "--feats_dir", str(feats_dir), "--exp_dir", str(exp), "--conf", "max_epochs=5",
            "--conf", "optim_conf.lr=0.01"]
    assert train.main(argv) == 0
    assert score.main([str(exp)]) == 0
    for s, n in (("val", 28), ("test", 35)):
        d = exp / f"decode_{s}"
        for name in ("metrics.json", "predictions.txt", "confusion.txt", "confusion.png", "report.txt"):
            assert (d / name).is_file(), name
        m = json.loads((d / "metrics.json").read_text())
        assert m["num_utts"] == n and m["set"] == s and m["task"] == "speech_all" and m["seed"] == 1
        assert set(m) >= {"wa", "ua", "macro_f1", "weighted_f1", "per_class", "confusion", "classes"}
        utts, labels, preds, probs, classes = score.read_predictions(d / "predictions.txt")
        assert len(utts) == n and classes == m["classes"] and np.allclose(probs.sum(1), 1, atol=1e-4)
        ids = {c: i for i, c in enumerate(classes)}
        again = score.compute_metrics([ids[x] for x in labels], [ids[x] for x in preds], len(classes))
        assert again["ua"] == pytest.approx(m["ua"]) and again["confusion"] == m["confusion"]
        assert "UA" in (d / "report.txt").read_text()
    assert score.main([str(tmp_path / "nothing")]) == 1
    # features of another upstream config (same shape) are refused, not scored
    other = tmp_path / "other_dump"
    shutil.copytree(feats_dir, other)
    meta = read_meta(other / "test")
    write_meta(other / "test", {**meta, "config_hash": "ffff0000"})
    with pytest.raises(ValueError, match="features of upstream config ffff0000, but .* trained on features of "
                                         "config 0123abcd"):
        score.score_exp(exp, ["test"], feats_dir=other)

"""Sentiment metrics on hand-computed values, and the constant predictors on the real test split."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from etser.sentiment_metrics import ccc, constant_baselines, pearson, sentiment_metrics, sign_metrics


def test_sign_metric_ignores_zero_labels_and_counts_zero_predictions_negative():
    pred = [0.5, -1.0, 2.0, 0.0, 0.0]
    label = [1.0, -1.0, 0.0, -2.0, 0.4]
    # non-zero labels: 1, -1, -2, 0.4 -> positive T F F T ; predictions > 0: T F F F (0.0 is not > 0)
    out = sign_metrics(pred, label)
    assert out["n_nonzero"] == 4
    assert out["acc2"] == pytest.approx(75.0)
    # class T: P=1, R=1/2 -> F1 2/3 (support 2); class F: P=2/3, R=1 -> F1 0.8 (support 2)
    assert out["f1_weighted"] == pytest.approx(100 * (2 / 3 + 0.8) / 2)


def test_regression_metrics_by_hand():
    pred, label = [0.5, -1.0, 2.0, 0.0], [1.0, -1.0, 0.0, -2.0]
    out = sentiment_metrics(pred, label)
    assert out["mae"] == pytest.approx(4.5 / 4)
    assert out["pearson"] == pytest.approx(2.25 / math.sqrt(4.6875 * 5))
    assert out["ccc"] == pytest.approx(6 / 17)  # 2 * 0.5625 / (1.171875 + 1.25 + 0.875 ** 2)
    assert out["acc2"] == 100.0 and out["n"] == 4


def test_constant_prediction():
    out = sentiment_metrics([-0.3] * 4, [1.0, -1.0, 0.0, 2.0])
    assert math.isnan(out["pearson"])  # zero variance: undefined
    assert out["ccc"] == 0.0
    assert out["acc2"] == pytest.approx(100 / 3)
    assert out["f1_weighted"] == pytest.approx(100 / 6)  # only class F predicted: F1(F)=0.5 with support 1
    assert out["mae"] == pytest.approx((1.3 + 0.7 + 0.3 + 2.3) / 4)


def test_all_zero_labels_and_bad_input():
    out = sentiment_metrics([0.1, -0.2], [0.0, 0.0])
    assert math.isnan(out["acc2"]) and math.isnan(out["f1_weighted"]) and out["n_nonzero"] == 0
    assert math.isnan(ccc([1.0, 1.0], [1.0, 1.0])) and math.isnan(pearson([1.0, 2.0], [3.0, 3.0]))
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        sentiment_metrics([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="labels contain NaN/inf at index 1"):
        sentiment_metrics([0, 1], [0, float("nan")])


def test_constant_baselines_by_hand():
    base = constant_baselines([-2.0, -1.0, 0.0, 3.0], [1.0, -1.0, -0.5, 0.0])
    assert base["train_mean"]["value"] == 0.0 and base["all_negative"]["value"] == -1.5
    # train mean 0.0 predicts "not positive" everywhere, like the all-negative one
    assert base["train_mean"]["acc2"] == pytest.approx(200 / 3) == base["all_negative"]["acc2"]
    assert base["all_negative"]["mae"] == pytest.approx((2.5 + 0.5 + 1.0 + 1.5) / 4)
    with pytest.raises(ValueError, match="no negative"):
        constant_baselines([0.0, 1.0], [1.0])


def _meta_dir() -> Path:
    env = os.environ.get("EMOTIONTALK_META")
    for d in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "emotiontalk-meta"]:
        if (d / "mm_label.npz").is_file():
            return d
    pytest.skip("EmotionTalk mm_label.npz not found (set EMOTIONTALK_META)")


def test_all_negative_on_the_real_test_split():
    d = np.load(_meta_dir() / "mm_label.npz", allow_pickle=True)
    train = [v["val"] for v in d["train_corpus"].item().values()]
    test = [v["val"] for v in d["test_corpus"].item().values()]
    base = constant_baselines(train, test)["all_negative"]
    assert base["n_nonzero"] == 1653
    assert round(base["acc2"], 1) == 92.1 and round(base["f1_weighted"], 1) == 88.4

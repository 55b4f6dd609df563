"""Metrics for continuous sentiment (values in [-2, 2]) and the constant predictors to read them against.

* ``acc2`` / ``f1_weighted`` — the official metric (MERBench's SIMS/MOSI metric, which the EmotionTalk code
  selects on): the sign ``pred > 0`` against ``label > 0``, on the utterances whose label is NOT zero only
  (a prediction of exactly 0 counts as negative); weighted F1 is scikit-learn's ``average="weighted"``;
* ``mae``, Pearson ``r`` and Lin's concordance ``ccc`` over all utterances.

Undefined values are NaN: ``acc2``/``f1_weighted`` when every label is zero, ``r`` when the predictions or the
labels are constant (zero variance), ``ccc`` when both are constant and equal.  A constant prediction gets a
well-defined CCC of 0 unless the labels are constant too.

:func:`constant_baselines` scores two constant predictors on the same labels: the training set's mean, and
the all-negative predictor (the mean of the negative training values, so its MAE is meaningful; its sign is
negative for every utterance).  On the EmotionTalk test split 1523 of the 1653 non-zero labels are negative, so
the all-negative predictor alone reaches Acc-2 92.1 / weighted F1 88.4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

METRICS = ("acc2", "f1_weighted", "mae", "pearson", "ccc")


def _arrays(pred, label) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"sentiment metrics: {p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("sentiment metrics: no utterances")
    for name, a in (("predictions", p), ("labels", y)):
        if not np.isfinite(a).all():
            raise ValueError(f"sentiment metrics: {name} contain NaN/inf at index {int(np.flatnonzero(~np.isfinite(a))[0])}")
    return p, y


def sign_metrics(pred, label) -> dict[str, float]:
    """Acc-2 and weighted F1 (in %) of ``pred > 0`` vs ``label > 0`` over non-zero labels; NaN if none."""
    p, y = _arrays(pred, label)
    nz = y != 0
    if not nz.any():
        return {"acc2": float("nan"), "f1_weighted": float("nan"), "n_nonzero": 0}
    yt, yp = y[nz] > 0, p[nz] > 0
    return {"acc2": 100.0 * accuracy_score(yt, yp),
            "f1_weighted": 100.0 * f1_score(yt, yp, average="weighted", zero_division=0),
            "n_nonzero": int(nz.sum())}


def _centred(a: np.ndarray) -> np.ndarray:
    # exactly zero for a constant array (a - a.mean() leaves rounding noise that would fake a variance)
    return a - a.mean() if np.ptp(a) > 0 else np.zeros_like(a)


def pearson(pred, label) -> float:
    p, y = _arrays(pred, label)
    dp, dy = _centred(p), _centred(y)
    den = np.sqrt((dp * dp).sum() * (dy * dy).sum())
    return float((dp * dy).sum() / den) if den > 0 else float("nan")


def ccc(pred, label) -> float:
    """Lin's concordance correlation 2 cov / (var_p + var_y + (mean_p - mean_y)^2), population moments."""
    p, y = _arrays(pred, label)
    dp, dy = _centred(p), _centred(y)
    cov = (dp * dy).mean()
    den = (dp * dp).mean() + (dy * dy).mean() + (p.mean() - y.mean()) ** 2
    return float(2 * cov / den) if den > 0 else float("nan")


def sentiment_metrics(pred, label) -> dict[str, float]:
    """All metrics of the module docstring; ``n`` utterances, ``n_nonzero`` of them with a non-zero label."""
    p, y = _arrays(pred, label)
    out = sign_metrics(p, y)
    out.update(mae=float(np.abs(p - y).mean()), pearson=pearson(p, y), ccc=ccc(p, y), n=int(p.size))
    return out


def constant_baselines(train_labels: Sequence[float], labels: Sequence[float]) -> dict[str, dict[str, float]]:
    """Metrics of the constant predictors ``train_mean`` and ``all_negative`` on ``labels`` (see above)."""
    tr = np.asarray(train_labels, dtype=np.float64).reshape(-1)
    if tr.size == 0:
        raise ValueError("constant baselines need training labels")
    neg = tr[tr < 0]
    if neg.size == 0:
        raise ValueError("all-negative baseline: the training labels have no negative value")
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    out = {}
    for name, value in (("train_mean", tr.mean()), ("all_negative", neg.mean())):
        row = sentiment_metrics(np.full(y.shape, value), y)
        row["value"] = float(value)
        out[name] = row
    return out

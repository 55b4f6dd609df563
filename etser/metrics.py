"""Classification metrics, confusion matrices, reports and prediction files (numpy and scikit-learn only).

Metrics (percent in reports, fractions in metrics.json), all from scikit-learn with ``labels=`` the task's
classes and ``zero_division=nan`` so that an undefined value is never counted as 0 or 1 by accident:

* WA — weighted accuracy: correct / utterances.
* UA — unweighted accuracy: the mean over classes of recall, over the classes that have reference
  utterances (= balanced accuracy; a class absent from the references has no recall).
* macro-F1 — the mean of per-class F1 over the classes that occur in the references or the predictions
  (F1 is undefined only when a class occurs in neither).  A class with references but no predictions has
  recall 0 and F1 0 and counts fully.
* weighted-F1 — per-class F1 weighted by reference counts.

:func:`quick_metrics` computes the same four from a bincount confusion matrix without importing
scikit-learn (for choosing the best epoch); :func:`confusion_metrics` is its vectorised form for the paired
bootstrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

METRIC_NAMES = {"wa": "WA", "ua": "UA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


def varying_counts(scored: Iterable[Mapping], key: str = "task") -> set:
    """The ``key`` values (tasks) whose scorings (metrics.json dicts) were made on different numbers of
    utterances (``num_utts``): stage-2 exclusions, missing labels.  Results tables show those counts."""
    seen: dict = {}
    for m in scored:
        if "num_utts" in m:
            seen.setdefault(m[key], set()).add(int(m["num_utts"]))
    return {k for k, ns in seen.items() if len(ns) > 1}


def count_note(runs: Iterable[Mapping]) -> str:
    """`` [N utts]`` (``N1/N2`` when the seeds differ): the utterances the runs of a table cell were scored on."""
    ns = sorted({int(r["num_utts"]) for r in runs if "num_utts" in r})
    return f" [{'/'.join(map(str, ns))} utts]" if ns else ""


def stale_note(runs: Iterable[Mapping]) -> str:
    """`` (stale)`` when a run of a table cell was scored on inputs that changed since (its ``stale`` reasons)."""
    return " (stale)" if any(r.get("stale") for r in runs) else ""


COUNT_NOTE = ("`[N utts]` after a cell: the number of utterances it was scored on, shown in every column whose "
              "rows were scored on different numbers (utterances that stage 2 excluded, labels missing): such "
              "cells are not measured on the same utterances.")


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict:
    """WA, UA, macro-F1, weighted-F1 (fractions), per-class values (None where undefined), confusion."""
    # scikit-learn takes ~2 s to import: only when scoring
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        raise ValueError("no utterances to score")
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan)
    wf1 = f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=np.nan)
    with np.errstate(all="ignore"):
        return {
            "wa": float(accuracy_score(y_true, y_pred)),
            "ua": float(np.nanmean(recall)),
            "macro_f1": float(np.nanmean(f1)),
            "weighted_f1": float(wf1),
            "num_utts": int(len(y_true)),
            "per_class": {"precision": _none_nan(precision), "recall": _none_nan(recall),
                          "f1": _none_nan(f1), "support": [int(s) for s in support]},
            "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        }


def quick_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """The same four metrics as :func:`compute_metrics` from a bincount confusion matrix, without
    scikit-learn: for choosing the best epoch on val (tests/test_score.py checks they agree)."""
    cm = np.bincount(np.asarray(y_true) * num_classes + np.asarray(y_pred),
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.float64)
    return metrics_from_confusion(cm[None])[0] | {"num_utts": int(cm.sum())}


def confusion_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """WA, UA, macro-F1, weighted-F1 of a stack of confusion matrices (B, C, C), rows = reference.

    Same conventions as :func:`compute_metrics`: UA over classes with references, macro-F1 over classes in
    the references or predictions.  Vectorised for the paired bootstrap (etser.report.results).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    total = support.sum(1)
    with np.errstate(all="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
        return {"wa": tp.sum(1) / total, "ua": np.nanmean(recall, axis=1), "macro_f1": np.nanmean(f1, axis=1),
                "weighted_f1": np.nansum(f1 * support, axis=1) / total}


def metrics_from_confusion(cm: np.ndarray) -> list[dict[str, float]]:
    """:func:`confusion_metrics` as one dict of floats per confusion matrix."""
    arrays = confusion_metrics(cm)
    return [{k: float(v[i]) for k, v in arrays.items()} for i in range(len(arrays["wa"]))]


def _none_nan(values) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


def confusion_text(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Rows: reference, columns: prediction; last column the reference count."""
    width = max(8, max(len(c) for c in classes) + 1)
    head = "ref\\hyp".ljust(width) + "".join(c.rjust(width) for c in classes) + "total".rjust(width)
    lines = [head]
    for c, row in zip(classes, confusion):
        lines.append(c.ljust(width) + "".join(str(v).rjust(width) for v in row) + str(sum(row)).rjust(width))
    return "\n".join(lines) + "\n"


def report_text(metrics: dict, classes: Sequence[str], title: str) -> str:
    fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    pc = metrics["per_class"]
    width = max(10, max(len(c) for c in classes) + 2)
    lines = [title, "", "class".ljust(width) + "precision   recall       f1  support"]
    for i, c in enumerate(classes):
        lines.append(c.ljust(width) + f"{fmt(pc['precision'][i]):>9}{fmt(pc['recall'][i]):>9}"
                     f"{fmt(pc['f1'][i]):>9}{pc['support'][i]:>9}")
    lines += ["", f"utterances   {metrics['num_utts']}"]
    for key, name in METRIC_NAMES.items():
        lines.append(f"{name:<12} {100 * metrics[key]:.2f}")
    lines += ["", "'-': undefined (precision of a class never predicted; recall of a class with no references).",
              "UA averages recall over classes with references; macro-F1 averages F1 over classes in the",
              "references or the predictions. See docs/training.md."]
    return "\n".join(lines) + "\n"


def write_predictions(path: Path, utts: Sequence[str], refs: Sequence[str] | None, probs: np.ndarray,
                      classes: Sequence[str]) -> None:
    """``uttid label pred p_<class>...``; first line is the header naming the columns (label '-' if unknown)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("uttid label pred " + " ".join(f"p_{c}" for c in classes) + "\n")
        for i, u in enumerate(utts):
            ref = refs[i] if refs is not None else "-"
            pred = classes[int(np.argmax(probs[i]))]
            f.write(f"{u} {ref} {pred} " + " ".join(f"{p:.6f}" for p in probs[i]) + "\n")


def read_predictions(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray, list[str]]:
    """(utts, labels, preds, probs (N, C), classes) from a predictions.txt."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        if header[:3] != ["uttid", "label", "pred"] or not all(h.startswith("p_") for h in header[3:]):
            raise ValueError(f"{path}: not a predictions file (header {' '.join(header[:4])}...)")
        classes = [h[2:] for h in header[3:]]
        utts, labels, preds, probs = [], [], [], []
        for lineno, line in enumerate(f, 2):
            parts = line.split()
            if len(parts) != 3 + len(classes):
                raise ValueError(f"{path}:{lineno}: expected {3 + len(classes)} fields, got {len(parts)}")
            utts.append(parts[0])
            labels.append(parts[1])
            preds.append(parts[2])
            probs.append([float(p) for p in parts[3:]])
    return utts, labels, preds, np.asarray(probs, dtype=np.float64).reshape(-1, len(classes)), classes

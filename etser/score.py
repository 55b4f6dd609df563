"""Stage 4: score trained heads on val and test.

    python -m etser.score [--sets "val test"] EXP_DIR [EXP_DIR ...]
    python -m etser.score --job_list exp/<tag>/score_jobs.txt --job JOB --num_jobs N

writes ``EXP_DIR/decode_<set>/``: ``metrics.json``, ``predictions.txt``, ``confusion.txt``, ``confusion.png``,
``report.txt``.  The data and feature dirs are the ones recorded in ``EXP_DIR/config.yaml`` unless
``--data_dir`` / ``--feats_dir`` are given; features of another upstream config than the training's (their
``meta.json`` config hash) are refused.

Metrics (percent in reports, fractions in metrics.json), all from scikit-learn with ``labels=`` the task's
classes and ``zero_division=nan`` so that an undefined value is never counted as 0 or 1 by accident:

* WA — weighted accuracy: correct / utterances.
* UA — unweighted accuracy: the mean over classes of recall, over the classes that have reference
  utterances (= balanced accuracy; a class absent from the references has no recall).
* macro-F1 — the mean of per-class F1 over the classes that occur in the references or the predictions
  (F1 is undefined only when a class occurs in neither).  A class with references but no predictions has
  recall 0 and F1 0 and counts fully.
* weighted-F1 — per-class F1 weighted by reference counts (the official EmotionTalk metric).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

LOG = logging.getLogger("etser.score")

METRIC_NAMES = {"wa": "WA", "ua": "UA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


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
    the references or predictions.  Vectorised for the paired bootstrap (etser.results).
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


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> None:
    """Counts in the cells, colour = row-normalised recall."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 1.2 + 0.75 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference row")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def score_set(exp_dir: Path, set_name: str, data_dir: Path, feats_dir: Path, device: str = "cpu",
              cache: dict | None = None) -> dict:
    """Score ``exp_dir``'s best model on ``set_name``; writes decode_<set>/ and returns metrics."""
    from etser import train  # torch and the feature readers: only when scoring a model

    start = time.monotonic()
    model, info = train.load_trained(exp_dir, device)
    # features of another upstream config can have the same shape and would be scored without an error
    trained_on = exp_dir / "feats_meta.json"
    expected = json.loads(trained_on.read_text()).get("config_hash") if trained_on.is_file() else None
    got = train.read_feats_meta(feats_dir / set_name).get("config_hash")
    if expected and got != expected:
        raise ValueError(f"{feats_dir / set_name}/meta.json: features of upstream config {got}, but {exp_dir} was "
                         f"trained on features of config {expected} ({trained_on}): score it on features of the "
                         "same upstream config")
    split = train.load_split(data_dir / set_name, feats_dir / set_name, info["task"], info["layers"],
                             model.input_kind, cache=cache, log=LOG.info)
    probs, _ = train.predict(model, split, device)
    classes = list(info["classes"])
    metrics = compute_metrics(split.labels, probs.argmax(1), len(classes))
    metrics.update({"set": set_name, "task": info["task"], "classes": classes, "head": info["head"],
                    "seed": info["seed"], "tag": info["tag"], "upstream": info["upstream"],
                    "best_epoch": info["epoch"], "left_out": split.left_out,
                    "data_dir": str(data_dir / set_name), "feats_dir": str(feats_dir / set_name)})
    out = exp_dir / f"decode_{set_name}"
    out.mkdir(parents=True, exist_ok=True)
    refs = [classes[i] for i in split.labels]
    write_predictions(out / "predictions.txt", split.utts, refs, probs, classes)
    (out / "confusion.txt").write_text(confusion_text(metrics["confusion"], classes))
    title = f"{info['tag']} {info['head']} {info['task']} seed{info['seed']} — {set_name}"
    (out / "report.txt").write_text(report_text(metrics, classes, title))
    plot_confusion(metrics["confusion"], classes, out / "confusion.png",
                   f"{title}\nUA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f}  "
                   f"macro-F1 {100 * metrics['macro_f1']:.1f}")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    tmp.replace(out / "metrics.json")
    LOG.info("%s: %s %d utts, UA %.2f WA %.2f macro-F1 %.2f weighted-F1 %.2f (%.1f s)", exp_dir, set_name,
             metrics["num_utts"], 100 * metrics["ua"], 100 * metrics["wa"], 100 * metrics["macro_f1"],
             100 * metrics["weighted_f1"], time.monotonic() - start)
    return metrics


def score_exp(exp_dir: Path, sets: Sequence[str], data_dir: Path | None = None, feats_dir: Path | None = None,
              device: str = "cpu", cache: dict | None = None) -> dict[str, dict]:
    from etser import train

    exp_dir = Path(exp_dir)
    if not (exp_dir / "best.pt").is_file():
        raise FileNotFoundError(f"{exp_dir}/best.pt not found: train it first (stage 3)")
    conf = train.read_exp_config(exp_dir)
    data_dir = Path(data_dir or conf["data_dir"])
    feats_dir = Path(feats_dir or conf["feats_dir"])
    return {s: score_set(exp_dir, s, data_dir, feats_dir, device, cache) for s in sets}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.score", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp_dirs", nargs="*", type=Path, help="trained exp dirs (with best.pt)")
    ap.add_argument("--sets", default="val test", help="space-separated sets to score (default: 'val test')")
    ap.add_argument("--data_dir", type=Path, default=None, help="default: the one in EXP_DIR/config.yaml")
    ap.add_argument("--feats_dir", type=Path, default=None, help="default: the one in EXP_DIR/config.yaml")
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--job_list", type=Path, default=None,
                    help="file of argument lines (one scoring each); run those of --job among --num_jobs")
    ap.add_argument("--job", type=int, default=1)
    ap.add_argument("--num_jobs", type=int, default=1)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from etser import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    ap = build_parser()
    args = ap.parse_args(argv)
    runs = train.job_list_lines(args.job_list, args.job, args.num_jobs) if args.job_list else [None]
    cache: dict = {}
    failed = []
    for line in runs:
        a = ap.parse_args(line) if line is not None else args
        if not a.exp_dirs:
            ap.error("no exp dir given")
        device = train.pick_device(a.ngpu)
        for exp in a.exp_dirs:
            try:
                score_exp(exp, a.sets.split(), a.data_dir, a.feats_dir, device, cache)
            except Exception as e:  # keep scoring the others; the exit code says something failed
                LOG.exception("scoring %s failed: %s", exp, e)
                failed.append(str(exp))
    if failed:
        LOG.error("%d exp dir(s) failed: %s", len(failed), " ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

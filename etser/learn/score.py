"""Stage 4: score trained heads on val and test.

    python -m etser.learn.score [--sets "val test"] EXP_DIR [EXP_DIR ...]

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

Continuous tasks (sentiment): :mod:`etser.sentiment_metrics` (Acc-2 / weighted F1 of the sign on non-zero
labels, MAE, Pearson r, CCC) and, beside them in ``metrics.json`` ``constant``, the same numbers of the
constant predictors (training mean, all negative) fitted on the training labels; predictions ``utt ref pred``.

Fusion models (several streams) are also scored with every non-empty subset of their modalities present
(the others marked absent, handled per algorithm): ``decode_<set>/missing.json`` maps ``speech+text`` etc.
to the metrics of that pattern.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from etser import provenance
from etser.models.heads import head_class

# re-exported: the metrics and prediction files live in etser.metrics, the figures in etser.report.plots
from etser.metrics import (METRIC_NAMES, compute_metrics, confusion_metrics, confusion_text,  # noqa: F401
                           metrics_from_confusion, quick_metrics, read_predictions, report_text, write_predictions)
from etser.report.plots import plot_confusion  # noqa: F401

LOG = logging.getLogger("etser.learn.score")


def scoring_identity(exp_dir: Path, set_name: str, data_dir: Path, label_file: str,
                     feats_dirs: dict[str, Path]) -> dict:
    """What decode_<set>/ is made from: the model (best.pt's content), the references (the label file's
    content) and the features of the set (stage 2's record)."""
    from etser.featset import read_meta

    def record(d: Path) -> dict:
        meta = read_meta(d)
        return {"config_hash": meta.get("config_hash"), "inputs": meta.get("inputs")}

    return {"model": provenance.content_identity(Path(exp_dir) / "best.pt"),
            "references": provenance.content_identity(Path(data_dir) / set_name / label_file)
            if (Path(data_dir) / set_name / label_file).is_file() else "missing",
            "features": {name: record(Path(d) / set_name) for name, d in sorted(feats_dirs.items())}}


def score_set(exp_dir: Path, set_name: str, data_dir: Path, feats_dirs: dict[str, Path] | None = None,
              device: str = "cpu", cache: dict | None = None, on_change: str = "redo") -> dict:
    """Score ``exp_dir``'s best model on ``set_name``; writes decode_<set>/ and returns metrics.

    ``feats_dirs``: stream name -> ``dump/<tag>`` (default: the ones recorded at training).  A decode dir made
    from the same model, references and features is reused ("up to date"); one whose inputs changed is redone
    (``on_change='refuse'``: an error naming the changes).
    """
    from etser.learn.checkpoint import read_exp_config

    start = time.monotonic()
    exp_dir = Path(exp_dir)
    out = exp_dir / f"decode_{set_name}"
    conf = read_exp_config(exp_dir)
    all_dirs = {st["name"]: Path((feats_dirs or {}).get(st["name"]) or st["feats_dir"]) for st in conf["streams"]}
    present = scoring_identity(exp_dir, set_name, data_dir, conf["task_spec"]["label_file"], all_dirs)
    if (out / "metrics.json").is_file():
        changes = provenance.check(str(out), provenance.read(out / provenance.FILE_NAME), present, on_change)
        if not changes:
            LOG.info("%s: up to date (same model, references and features), kept", out)
            return json.loads((out / "metrics.json").read_text())
        LOG.info("%s: rescoring, its inputs changed: %s", out, "; ".join(changes))
    # torch and the feature reader: only when scoring a model
    from etser.learn.checkpoint import load_best
    from etser.featset import Stream, drop_stage2_excluded, load_examples, read_meta
    from etser.tasks import task_from_spec

    model, info = load_best(exp_dir, device)
    task = task_from_spec(info["task_spec"], f"{exp_dir}/best.pt")
    streams = []
    for st in info["streams"]:
        feats_dir = Path((feats_dirs or {}).get(st["name"]) or st["feats_dir"])
        # features of another upstream config can have the same shape and would be scored without an error
        got = read_meta(feats_dir / set_name).get("config_hash")
        if st.get("config_hash") and got != st["config_hash"]:
            raise ValueError(f"{feats_dir / set_name}/meta.json: features of upstream config {got}, but {exp_dir} "
                             f"was trained on features of config {st['config_hash']} (stream {st['name']}): score "
                             "it on features of the same upstream config")
        streams.append(Stream(st["name"], feats_dir, tuple(st["layers"]), st["kind"]))
    utts, targets, left_out = task.read_targets(Path(data_dir) / set_name, LOG.info)
    where = str(Path(data_dir) / set_name / task.label_file)
    allow_missing = bool(info.get("allow_missing", False))
    utts, targets = drop_stage2_excluded(utts, targets, streams, set_name, where, LOG.info)
    if len(streams) > 1:
        from etser.featset import check_stream_utts

        check_stream_utts(utts, streams, set_name, where, allow_missing, LOG.info)
    examples = load_examples(utts, targets, streams, set_name, where=where, cache=cache, log=LOG.info,
                             left_out=left_out, allow_missing=allow_missing)
    posteriors = _posteriors(model, task, examples, device)
    train_targets = None
    if task.scored_with_train_targets:   # e.g. constant predictors fitted on the training labels
        train_set = Path(data_dir) / str(info.get("train_set") or "train")
        if (train_set / task.label_file).is_file():
            train_targets = task.read_targets(train_set)[1]
    metrics = task.metrics(targets, posteriors, train_targets)
    missing = {}
    for subset in model.modality_subsets():
        model.keep_modalities = set(subset)
        try:
            post = _posteriors(model, task, examples, device, skip_empty=True)
        finally:
            model.keep_modalities = None
        if post is None:
            continue
        m = task.metrics(targets[post[1]], post[0], train_targets)
        missing["+".join(subset)] = {k: v for k, v in m.items() if k not in ("confusion", "per_class")}
    classes = list(task.classes)
    metrics.update({"set": set_name, "task": info["task"], "title": task.title, "classes": classes,
                    "head": info["head"], "seed": info["seed"], "tag": info["tag"], "upstream": info["upstream"],
                    "modality": info.get("modality", "speech"), "best_epoch": info["epoch"], "left_out": left_out,
                    "kind": task.kind, **head_class(info["head"]).report_fields(info),
                    "data_dir": str(Path(data_dir) / set_name),
                    "feats_dir": " ".join(str(s.feats_dir / set_name) for s in streams)})
    out.mkdir(parents=True, exist_ok=True)
    (out / provenance.FILE_NAME).unlink(missing_ok=True)  # until metrics.json is rewritten: not up to date
    task.write_predictions(out / "predictions.txt", utts, targets, posteriors)
    task.write_reports(out, metrics, f"{info['tag']} {info['head']} {info['task']} seed{info['seed']} — {set_name}")
    if missing:
        tmp = out / "missing.json.tmp"
        tmp.write_text(json.dumps({"streams": [s.name for s in streams], "patterns": missing}, indent=1) + "\n")
        tmp.replace(out / "missing.json")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    tmp.replace(out / "metrics.json")
    provenance.write(out / provenance.FILE_NAME, present)
    LOG.info("%s: %s %d utts, %s (%.1f s)", exp_dir, set_name, metrics["num_utts"],
             " ".join(f"{name} {100 * metrics[k]:.2f}" for k, name in task.metric_names.items()),
             time.monotonic() - start)
    return metrics


def _posteriors(model, task, examples, device: str, skip_empty: bool = False):
    """Posteriors (N, C) of ``examples``.  ``skip_empty`` (scoring with modalities kept out): utterances left
    with no modality present are skipped; returns (posteriors, indices scored) or None when none is left."""
    import torch

    from etser.featset import iter_batches

    out, kept = [], []
    with torch.no_grad():
        for idx in iter_batches(len(examples), model.eval_batch_size):
            batch = examples.batch(idx, device)
            if skip_empty:
                keep = model.keep_modalities
                any_present = torch.stack([s["present"] & (n in keep) for n, s in batch["streams"].items()]).any(0)
                sel = [i for i, ok in zip(idx, any_present.tolist()) if ok]
                if not sel:
                    continue
                if len(sel) != len(idx):
                    batch = examples.batch(sel, device)
                kept += sel
            out.append(task.posteriors(model(batch)))
    if skip_empty:
        return (np.concatenate(out), np.asarray(kept, dtype=np.int64)) if out else None
    return np.concatenate(out)


def stale_reasons(exp_dir: Path, set_name: str, cache: dict | None = None) -> list[str]:
    """Why ``exp_dir/decode_<set>`` no longer shows what the data and dump dirs hold now ([] when it does):

    * its scoring record against the present model, references and features (a label corrected, features
      re-extracted, the model retrained);
    * the training's record against the label files and features it read (train, val);
    * every dump it read (train, val, the scored set) against the data dir it was extracted from: audio,
      videos or transcripts changed while stage 2 was skipped.

    ``cache`` (a dict) keeps the dumps' answers across the exp dirs of one results run.  Exp dirs that
    record no streams (the ESPnet backend's) are not checked here.
    """
    from etser.learn.checkpoint import read_exp_config
    from etser.featset import training_identity
    from etser.tasks import task_from_spec

    exp_dir = Path(exp_dir)
    try:
        conf = read_exp_config(exp_dir)
    except FileNotFoundError:
        return [f"{exp_dir}/config.yaml not found"]
    if not conf.get("streams") or not conf.get("task_spec"):
        return []
    cache = {} if cache is None else cache
    data_dir = Path(conf["data_dir"])
    dirs = {st["name"]: Path(st["feats_dir"]) for st in conf["streams"]}
    out = []
    decode = exp_dir / f"decode_{set_name}"
    recorded = provenance.read(decode / provenance.FILE_NAME)
    present = scoring_identity(exp_dir, set_name, data_dir, conf["task_spec"]["label_file"], dirs)
    out += [f"scores: {c}" for c in provenance.check(str(decode), recorded, present)]
    sets = (conf["train_set"], conf["valid_set"])
    recorded = provenance.read(exp_dir / provenance.FILE_NAME)
    if recorded is None:
        out.append("training: no record of what it was made from")
    else:
        task = task_from_spec(conf["task_spec"], f"{exp_dir}/config.yaml")
        now = training_identity(recorded.get("config"), task, data_dir, sets, conf["streams"])
        out += [f"training: {c}" for c in provenance.describe_changes(recorded, now)]
    for name, feats in dirs.items():
        for s in dict.fromkeys((*sets, set_name)):
            key = (str(feats / s), str(data_dir / s))
            if key not in cache:
                cache[key] = _dump_changes(feats / s, data_dir / s)
            out += [f"features {feats / s}: {c}" for c in cache[key]]
    return out


def _dump_changes(set_dir: Path, data: Path) -> list[str]:
    """Stage 2's record of a dump against the data dir now (etser.extract.status): [] when up to date."""
    from etser.features.extract import status

    config = next((p for p in (set_dir / "upstream.yaml", set_dir.parent / "upstream.yaml") if p.is_file()), None)
    if config is None or not data.is_dir():
        return []  # no config copy (a dump made by hand) or no data dir: nothing to compare against
    try:
        return status(config, data, set_dir)
    except Exception as e:  # noqa: BLE001 - an unreadable config or table: the row is marked, not the run stopped
        return [f"cannot be checked ({type(e).__name__}: {e})"]


def score_exp(exp_dir: Path, sets: Sequence[str], data_dir: Path | None = None, feats_dir: Path | None = None,
              device: str = "cpu", cache: dict | None = None, on_change: str = "redo") -> dict[str, dict]:
    """Score on ``sets``; ``data_dir`` / ``feats_dir`` default to the ones in EXP_DIR/config.yaml (a
    ``feats_dir`` given replaces the dump of a one-stream model)."""
    from etser.learn.checkpoint import read_exp_config

    exp_dir = Path(exp_dir)
    if not (exp_dir / "best.pt").is_file():
        raise FileNotFoundError(f"{exp_dir}/best.pt not found: train it first (stage 3)")
    conf = read_exp_config(exp_dir)
    data_dir = Path(data_dir or conf["data_dir"])
    feats_dirs = None
    if feats_dir is not None:
        names = [st["name"] for st in conf.get("streams") or []]
        if len(names) != 1:
            raise ValueError(f"{exp_dir}: --feats_dir replaces one stream's features; this model reads "
                             f"{len(names)} ({', '.join(names)})")
        feats_dirs = {names[0]: Path(feats_dir)}
    return {s: score_set(exp_dir, s, data_dir, feats_dirs, device, cache, on_change) for s in sets}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.learn.score", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp_dirs", nargs="*", type=Path, help="trained exp dirs (with best.pt)")
    ap.add_argument("--sets", default="val test", help="space-separated sets to score (default: 'val test')")
    ap.add_argument("--data_dir", type=Path, default=None, help="default: the one in EXP_DIR/config.yaml")
    ap.add_argument("--feats_dir", type=Path, default=None, help="default: the one in EXP_DIR/config.yaml")
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--on_change", choices=provenance.ON_CHANGE, default=os.environ.get("ETSER_ON_CHANGE", "redo"),
                    help="a decode dir whose model, references or features changed: rescore (redo) or stop naming "
                         "the change (refuse); default $ETSER_ON_CHANGE or redo")
    return ap


def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> None:
    """The scorings of one job file's line (the job-module protocol): every exp dir of it is scored, then a
    failure of any raises naming them; ``cache`` holds the features already read by this process."""
    from etser.runtime import pick_device

    if not args.exp_dirs:
        raise ValueError("no exp dir given")
    device = pick_device(args.ngpu)
    failed = []
    for exp in args.exp_dirs:
        try:
            score_exp(exp, args.sets.split(), args.data_dir, args.feats_dir, device, cache, args.on_change)
        except Exception as e:  # keep scoring the others; the exit code says something failed
            LOG.exception("scoring %s failed: %s", exp, e)
            failed.append(str(exp))
    if failed:
        raise RuntimeError(f"{len(failed)} exp dir(s) failed: {' '.join(failed)}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    ap = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    if not args.exp_dirs:
        ap.error("no exp dir given")
    try:
        run_line(args, argv, {})
    except RuntimeError as e:   # run_line has logged each failure
        LOG.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 3: train a downstream head on stage-2 features.

    python -m etser.learn.train --config conf/train/superb.yaml --task speech_four --seed 1 \\
        --data_dir data --feats_dir dump/<tag> --exp_dir exp/<tag>/superb/speech_four/seed1

Pooled heads train from the per-layer time-mean/std cache held in memory, so an epoch is one pass over a
few small tensors; frame heads read ``frames.scp``.  The best epoch is chosen on the validation set
(``select_metric``, default UA); training stops after ``patience`` epochs without improvement.

Every epoch ends with a checkpoint (model, optimizer, RNG states, early-stopping state, history) written
atomically; rerunning the same command after a kill resumes from the last one and ends with the same
weights and metrics as an uninterrupted run (deterministic on CPU for a given seed and thread count).
A finished exp dir (``done``) is skipped unless ``--overwrite true``.

Writes: ``config.yaml`` (resolved config), ``cmd``, ``upstream.yaml`` / ``feats_meta.json`` (what the features
came from, for inference), ``train.log``, ``checkpoints/``, ``best.pt``, ``curve.png``, ``done``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from etser.learn.checkpoint import read_checkpoint
from etser.learn import loop
from etser.learn.loop import config_hash
from etser import provenance
from etser.cli import name_value_items, str2bool
from etser.featset import (Examples, Stream, check_stream_utts, drop_stage2_excluded, iter_batches,  # noqa: F401
                           load_examples, load_stream, read_meta, training_identity)
from etser.models.heads import Head, build_head, head_class, input_kind
from etser.runtime import peak_rss_mb, pick_device, set_threads
from etser.tasks import Task, load_tasks
from etser.learn.trainconf import DEFAULTS, load_config  # noqa: F401  (below the trainer: run.sh checks configs)

LOG = logging.getLogger("etser.learn.train")
# per-epoch lines: train.log only (the job log gets the progress bar and the summary)
EPOCH_LOG = logging.getLogger("etser.learn.train.epochs")
EPOCH_LOG.propagate = False

# ---------------------------------------------------------------- data

def load_split(task: Task, data_dir: Path, set_name: str, streams: Sequence[Stream], cache: dict | None = None,
               log=LOG.info, preload_frames_gb: float = 2.0, allow_missing: bool = False) -> Examples:
    """The task's targets in ``data_dir/<set_name>`` and every stream's inputs of those utterances."""
    utts, targets, left_out = task.read_targets(Path(data_dir) / set_name, log)
    where = str(Path(data_dir) / set_name / task.label_file)
    utts, targets = drop_stage2_excluded(utts, targets, streams, set_name, where, log)
    if len(streams) > 1:
        check_stream_utts(utts, streams, set_name, where, allow_missing, log)
    return load_examples(utts, targets, streams, set_name, where=where, cache=cache, log=log,
                         preload_frames_gb=preload_frames_gb, left_out=left_out, allow_missing=allow_missing)


@torch.no_grad()
def predict(model: Head, task: Task, examples: Examples, device: str, batch_size: int | None = None
            ) -> tuple[np.ndarray, float]:
    """Posteriors (N, C) and the mean loss (unweighted) on ``examples``."""
    batch_size = batch_size or model.eval_batch_size
    model.eval()
    posteriors, loss = [], 0.0
    for idx in iter_batches(len(examples), batch_size):
        batch = examples.batch(idx, device)
        outputs = model(batch).float()
        loss += task.loss(outputs, batch["target"], reduction="sum").item()
        posteriors.append(task.posteriors(outputs))
    return np.concatenate(posteriors), loss / len(examples)


# ---------------------------------------------------------------- training

def plot_curve(history: list[dict], metric_names: dict, metric: str, best_epoch: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    for key, name in metric_names.items():
        a2.plot(ep, [100 * h[f"val_{key}"] for h in history], label=f"val {name}", lw=2 if key == metric else 1)
    a2.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    a2.set_xlabel("epoch")
    a2.set_ylabel("%")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train(conf: dict, task_name: str, data_dir: Path, feats_dir: Path | None, exp_dir: Path, seed: int,
          device: str = "cpu", num_threads: int = 1, overwrite: bool = False, command: str = "",
          cache: dict | None = None, tasks_conf: Path | None = None,
          fusion_streams: dict[str, Path] | None = None, on_change: str = "redo") -> dict:
    """Train one head; returns the summary written to ``exp_dir/done``.

    ``fusion_streams`` (stream name -> ``dump/<tag>``) replaces ``feats_dir`` for heads over several streams.
    """
    exp_dir, data_dir = Path(exp_dir), Path(data_dir)
    feats_dir = Path(feats_dir) if feats_dir is not None else None
    tasks = load_tasks(tasks_conf)
    task = tasks.get(task_name)
    conf = {**conf, "select_metric": task.select_metric(conf.get("select_metric"))}
    cls = head_class(conf["head"])
    kind = input_kind(conf["head"], conf["head_conf"])
    if fusion_streams:
        dumps = {str(n): Path(d) for n, d in fusion_streams.items()}
    elif feats_dir is not None:
        dumps = {None: feats_dir}          # one stream, named by its modality
    else:
        raise ValueError("no features: give --feats_dir (one stream) or --fusion_streams (several)")
    if cls.num_streams is not None and len(dumps) != cls.num_streams:
        raise ValueError(f"head {conf['head']} reads {cls.num_streams} stream(s), got {len(dumps)}")
    streams, metas = [], {}
    for name, fdir in dumps.items():
        m = read_meta(fdir / conf["train_set"])
        name = name or m["modality"]
        metas[name] = m
        layers = cls.select_layers(conf["head_conf"], int(m["num_layers"]), m.get("frame_layers"))
        streams.append({"name": name, "modality": m["modality"], "feats_dir": str(fdir), "kind": kind,
                        "layers": layers, "num_layers": int(m["num_layers"]), "dim": int(m["dim"]),
                        "upstream": m.get("upstream", fdir.name), "tag": fdir.name,
                        "config_hash": m.get("config_hash")})
    meta = metas[streams[0]["name"]] if len(streams) == 1 else {"streams": metas}
    if len(streams) == 1:
        tag, upstream, modality = Path(streams[0]["feats_dir"]).name, streams[0]["upstream"], streams[0]["modality"]
    else:
        tag = "fusion_" + "+".join(st["tag"] for st in streams)
        upstream = " + ".join(st["upstream"] for st in streams)
        modality = "fusion"
    resolved = {**conf, "task": task_name, "task_spec": task.spec(), "classes": list(task.classes),
                "tasks_conf": tasks.path, "seed": seed, "data_dir": str(data_dir),
                "feats_dir": " ".join(st["feats_dir"] for st in streams),
                "tag": tag, "upstream": upstream, "modality": modality, "layers": streams[0]["layers"],
                "streams": streams}
    # what determines the result (not where it runs, nor where the files are)
    chash = config_hash({k: v for k, v in resolved.items()
                         if k not in ("data_dir", "feats_dir", "tasks_conf", "fusion_conf_dir")}
                        | {"streams": [{k: v for k, v in st.items() if k != "feats_dir"} for st in streams]})
    # what the training is made from: a rerun reuses (or resumes) it only while all of this is unchanged
    present = training_identity(chash, task, data_dir, (conf["train_set"], conf["valid_set"]), streams)
    summary = provenance.open_training_dir(exp_dir, present, overwrite, on_change, LOG)
    if summary is not None:
        return summary
    handler = loop.log_file(exp_dir, LOG, EPOCH_LOG)
    try:
        return _train(resolved, chash, meta, task, data_dir, feats_dir, exp_dir, seed, device, num_threads,
                      command, cache)
    finally:
        loop.close_log_file(handler, LOG, EPOCH_LOG)


def _train(conf, chash, meta, task, data_dir, feats_dir, exp_dir, seed, device, num_threads, command, cache) -> dict:
    start_time = time.monotonic()
    set_threads(num_threads, device)
    last, last_path = loop.last_checkpoint(exp_dir, chash)
    LOG.info("%s %s", "resuming" if last else "starting", command or "(no command line)")
    loop.write_run_record(exp_dir, command, conf, chash, device, num_threads)
    (exp_dir / "feats_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    for st in conf["streams"]:  # the upstream config the features came from, for inference
        fdir = Path(st["feats_dir"])
        src = fdir / conf["train_set"] / "upstream.yaml"
        if not src.is_file():
            src = fdir / "upstream.yaml"
        if src.is_file():
            shutil.copyfile(src, exp_dir / ("upstream.yaml" if len(conf["streams"]) == 1
                                            else f"upstream_{st['name']}.yaml"))

    streams = [Stream(st["name"], Path(st["feats_dir"]), tuple(st["layers"]), st["kind"]) for st in conf["streams"]]
    kw = dict(cache=cache, log=LOG.info, preload_frames_gb=conf["preload_frames_gb"],
              allow_missing=bool(conf["allow_missing"]))
    tr = load_split(task, data_dir, conf["train_set"], streams, **kw)
    va = load_split(task, data_dir, conf["valid_set"], streams, **kw)
    LOG.info("task %s: train %d utts (%s), val %d utts; head %s on %s; device %s",
             task.name, len(tr), task.describe_targets(tr.targets), len(va), conf["head"],
             "; ".join(f"{st['name']} layers {_layer_span(st['layers'])} of {st['num_layers']} (dim {st['dim']}, "
                       f"{st['kind']})" for st in conf["streams"]), device)
    warning = task.check_training_targets(tr.targets)
    if warning:
        LOG.warning("%s", warning)

    torch.manual_seed(seed)
    model = build_head(conf["head"], conf["head_conf"], conf["streams"], task.output_size)
    pooled = {}   # one standardisation per stream, from its present utterances
    for st in streams:
        mean, std = _pooled_for_normalizer(tr, data_dir, conf, st, cache)
        keep = tr.streams[st.name].present
        pooled[st.name] = (mean[keep], std[keep])
    model.fit_normalizers(pooled)
    model.to(device)
    opt = loop.make_optimizer(conf["optim"], model.parameters(), conf["optim_conf"])
    weight = None
    if conf["class_weighted_loss"]:
        w = task.class_weights(tr.targets)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
        LOG.info("class weights: %s", ", ".join(f"{c} {x:.3f}" for c, x in zip(task.classes, w)))
    shuffle = torch.Generator().manual_seed(seed)
    metric, names = conf["select_metric"], task.metric_names
    info = {"head": conf["head"], "head_conf": conf["head_conf"], "task": task.name, "task_spec": task.spec(),
            "classes": list(task.classes), "output_size": task.output_size, "streams": conf["streams"],
            "layers": conf["layers"], "seed": seed, "tag": conf["tag"], "upstream": conf["upstream"],
            "modality": conf["modality"], "config_hash": chash, "allow_missing": bool(conf["allow_missing"])}

    def step(idx):
        batch = tr.batch(idx, device)
        outputs, aux = model.outputs(batch)
        loss = task.loss(outputs, batch["target"], weight=weight)
        return loss if aux is None else loss + aux   # a fusion model's extra loss, added as is (MERBench)

    last_metrics: dict = {}   # the latest validation's metrics, recorded in best.pt

    def validate():
        posteriors, val_loss = predict(model, task, va, device)
        m = task.quick_metrics(va.targets, posteriors)
        last_metrics.clear()
        last_metrics.update(m)
        return {"val_loss": val_loss, **{f"val_{k}": m[k] for k in names}}, m[metric]

    fit = loop.Fit(
        model=model, optimizer=opt, num_train=len(tr), batch_size=int(conf["batch_size"]), step=step,
        clip=lambda: loop.clip_gradients(model.parameters(), conf["grad_clip"], conf["grad_clip_mode"]),
        validate=validate, better=lambda value, best: task.better(metric, value, best),
        best_record=lambda epoch, row: {"val_metrics": dict(last_metrics), "info": info},
        epoch_line=lambda epoch, row, improved: (
            f"epoch {epoch} train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
            + " ".join(f"val_{k} {100 * row[f'val_{k}']:.2f}" for k in names)
            + f" ({row['seconds']:.2f} s)" + (" *best" if improved else "")),
        bar_text=lambda value, best: f"val {names[metric]} {100 * value:.1f} best {100 * best:.1f}",
        shuffle=bool(conf["shuffle"]))
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if last is not None:
        state = loop.restore(fit, last, shuffle, device)
        LOG.info("resumed from %s (epoch %d done; best epoch %d, val %s %.2f)", last_path, state["epoch"],
                 state["best_epoch"], names[metric], 100 * state["best"])
    state = loop.run_epochs(fit, exp_dir, chash, shuffle, state, device, conf["max_epochs"], conf["patience"],
                            conf["keep_checkpoints"], EPOCH_LOG.info)

    title = f"{conf['tag']} {conf['head']} {task.name} seed{seed}"
    plot_curve(state["history"], names, metric, state["best_epoch"], exp_dir / "curve.png", title)
    best = read_checkpoint(exp_dir / "best.pt")
    seconds = time.monotonic() - start_time
    summary = loop.write_done(exp_dir, {
        "best_epoch": state["best_epoch"], "epochs": state["epoch"], "stopped": state["stopped"],
        "val_metrics": {k: best["val_metrics"][k] for k in (*names, "num_utts")},
        "select_metric": metric, "config_hash": chash, "seconds_last_run": round(seconds, 2)})
    LOG.info("%s: %d epochs (%s), best epoch %d val %s %.2f; %.1f s, %.0f train utts/s, peak RSS %.0f MB",
             exp_dir, state["epoch"], state["stopped"], state["best_epoch"], names[metric], 100 * state["best"],
             seconds, len(tr) * (state["epoch"] - state["first_epoch"]) / max(seconds, 1e-9), peak_rss_mb())
    return summary


def _layer_span(layers: Sequence[int]) -> str:
    if len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _pooled_for_normalizer(tr: Examples, data_dir: Path, conf: dict, stream: Stream, cache):
    """Training-set pooled statistics of the head's layers (frame heads standardise frames with them)."""
    data = tr.streams[stream.name]
    if data.kind != "pooled":
        data = load_stream(Path(stream.feats_dir) / conf["train_set"], tr.utts, stream.layers, "pooled", cache=cache,
                           allow_missing=bool(conf["allow_missing"]))
    return data.mean, data.std


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.learn.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="conf/train/<head>.yaml")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config option (YAML value; head_conf.stats=[mean] for nested keys)")
    ap.add_argument("--task", help="a task of --tasks_conf (speech_four, multi_all, ...)")
    ap.add_argument("--tasks_conf", type=Path, default=None, help="tasks YAML (default: conf/tasks.yaml of the repo)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data_dir", type=Path, default=Path("data"), help="holds <train_set>/, <valid_set>/")
    ap.add_argument("--feats_dir", type=Path, help="dump/<tag>: holds <train_set>/, <valid_set>/")
    ap.add_argument("--fusion_streams", default=None, metavar='"NAME=DIR ..."',
                    help="several streams instead of --feats_dir: e.g. 'speech=dump/A text=dump/B visual=dump/C'")
    ap.add_argument("--exp_dir", type=Path)
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--num_threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--overwrite", type=str2bool, default=False, help="retrain a finished exp dir")
    ap.add_argument("--on_change", choices=provenance.ON_CHANGE, default=os.environ.get("ETSER_ON_CHANGE", "redo"),
                    help="an exp dir whose inputs (labels, features, config) changed: retrain it (redo) or stop "
                         "naming what changed (refuse); default $ETSER_ON_CHANGE or redo")
    return ap


def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> dict:
    """One training of a job file's line (the job-module protocol: raises on failure; ``cache`` holds the
    features already read by this process's earlier lines)."""
    for name in ("config", "task", "exp_dir"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name} is required")
    streams = parse_streams(args.fusion_streams) if args.fusion_streams else None
    if args.feats_dir is None and not streams:
        raise ValueError("--feats_dir (or --fusion_streams) is required")
    conf = load_config(args.config, args.conf)
    command = "python -m etser.learn.train " + " ".join(shlex.quote(a) for a in argv)
    return train(conf, args.task, args.data_dir, args.feats_dir, args.exp_dir, args.seed, pick_device(args.ngpu),
                 args.num_threads, args.overwrite, command, cache, args.tasks_conf, streams, args.on_change)


def parse_streams(text: str) -> dict[str, Path]:
    """``"speech=dump/A text=dump/B"`` -> {name: dir}; a name twice or an item without ``=`` is an error."""
    return {name: Path(value) for name, value in name_value_items(text, "--fusion_streams", "NAME=DIR")}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    ap = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    try:
        run_line(args, argv, {})
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        LOG.error("%s", e.args[0] if isinstance(e, KeyError) else e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

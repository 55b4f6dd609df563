"""Train a speech captioner for one caption kind.

    python -m etser.caption.train --config conf/caption/transformer.yaml --kind style --seed 1 \\
        --data_dir data --feats_dir dump/<tag> --exp_dir exp/caption/<tag>/transformer/style/seed1

Frame-level features of ``train_set`` -> adaptor -> decoder (etser.models.decoders), cross-entropy on the
caption tokens.  Every epoch ends with a validation pass (loss, and greedy decoding scored with the
pure-Python BLEU-4 / ROUGE-L / CIDEr-D when ``select_metric`` is one of them) and a checkpoint (model,
optimizer, RNG states, early-stopping state) written atomically; rerunning the same command after a kill
resumes from it and ends with the same weights as an uninterrupted run (CPU, same seed and thread count).

Writes ``config.yaml``, ``cmd``, ``provenance.json`` (what it was made from: a rerun whose config, captions or
features changed retrains, or with ``--on_change refuse`` stops), ``tokenizer.json`` (from-scratch decoder),
``train.log``, ``checkpoints/``, ``best.pt``, ``done``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from etser import provenance
from etser.caption.data import CaptionSet, load_frames, pad_frames, read_captions, task_of
from etser.caption.config import DEFAULTS, TOKENIZER_FILES, decoder_class, load_config  # noqa: F401
from etser.caption.decode import generate, quiet_transformers
from etser.models.decoders import build_model, frame_stats, trainable_state
from etser.caption.text import Tokenizer
from etser.cli import str2bool
from etser.featset import features_record, read_meta
from etser.learn import loop
from etser.learn.checkpoint import atomic_save, average_epochs, prune_epochs
from etser.learn.loop import config_hash
from etser.runtime import peak_rss_mb, pick_device, set_threads

LOG = logging.getLogger("etser.caption.train")


@torch.no_grad()
def mean_loss(model, cs: CaptionSet, device: str, batch_size: int = 32) -> float:
    model.eval()
    total = 0.0
    for s in range(0, len(cs), batch_size):
        frames, lengths = pad_frames(cs.frames[s:s + batch_size])
        total += model.loss(frames.to(device), lengths.to(device), cs.captions[s:s + batch_size]).item() * len(
            cs.frames[s:s + batch_size])
    return total / len(cs)


def training_identity(chash: str, task, data_dir: Path, feats_dir: Path, sets: Sequence[str]) -> dict:
    """The resolved config, the caption file of every set read (content) and those sets' features (stage 2's
    record): a caption corrected, features re-extracted or a config edited changes it."""
    files = {s: Path(data_dir) / s / task.label_file for s in sets}
    return {"config": chash,
            "captions": {s: provenance.content_identity(f) if f.is_file() else "missing" for s, f in files.items()},
            "features": {s: features_record(Path(feats_dir) / s) for s in sets}}


def train(conf: dict, kind, data_dir: Path, feats_dir: Path, exp_dir: Path, seed: int, device: str = "cpu",
          num_threads: int = 1, overwrite: bool = False, command: str = "", on_change: str = "redo",
          tasks_conf: Path | None = None) -> dict:
    """Train one captioner of a caption task (``kind``: the task, or its caption kind in ``tasks_conf``)."""
    task = task_of(kind, tasks_conf)
    data_dir, feats_dir, exp_dir = Path(data_dir), Path(feats_dir), Path(exp_dir)
    meta = read_meta(feats_dir / conf["train_set"])
    conf = {**conf, "select_metric": task.select_metric(conf["select_metric"])}
    resolved = {**conf, "kind": task.caption_kind, "seed": seed, "tag": feats_dir.name,
                "upstream": meta.get("upstream")}
    chash = config_hash({k: v for k, v in resolved.items()})
    # what the training is made from: reused (or resumed) only while all of it is unchanged
    present = training_identity(chash, task, data_dir, feats_dir, (conf["train_set"], conf["valid_set"]))
    summary = provenance.open_training_dir(exp_dir, present, overwrite, on_change, LOG)
    if summary is not None:
        return summary
    handler = loop.log_file(exp_dir, LOG)
    try:
        return _train(resolved, task, chash, meta, data_dir, feats_dir, exp_dir, seed, device, num_threads, command)
    finally:
        loop.close_log_file(handler, LOG)


def _train(conf, task, chash, meta, data_dir, feats_dir, exp_dir, seed, device, num_threads, command) -> dict:
    t_start = time.monotonic()
    set_threads(num_threads, device)
    last, last_path = loop.last_checkpoint(exp_dir, chash)
    LOG.info("%s %s", "resuming" if last else "starting", command or "(no command line)")
    loop.write_run_record(exp_dir, command, conf, chash, device, num_threads)

    kind = conf["kind"]
    tr = read_captions(data_dir / conf["train_set"], task, LOG.info)
    va = read_captions(data_dir / conf["valid_set"], task, LOG.info)
    gb = float(conf["preload_frames_gb"])
    layers, dim = load_frames(tr, feats_dir / conf["train_set"], conf["layers"], gb, LOG.info)
    load_frames(va, feats_dir / conf["valid_set"], layers, gb, LOG.info)

    tok = None
    if decoder_class(conf).own_tokenizer:
        tok_path = exp_dir / "tokenizer.json"
        if last is not None and tok_path.is_file():
            tok = Tokenizer.load(tok_path)
        else:
            tok = Tokenizer.build(tr.captions, conf["tokenizer_unit"], int(conf["min_token_count"]))
            tok.save(tok_path)
        LOG.info("tokenizer: %d %s tokens (with 4 specials) from %d training captions", len(tok), tok.unit, len(tr))
    torch.manual_seed(seed)
    model = build_model(conf, len(layers), dim, tok).to(device)
    if conf["adaptor_conf"].get("normalize") == "global":
        mean, std = frame_stats(tr.frames)
        model.adaptor.feat_mean.copy_(mean)
        model.adaptor.feat_std.copy_(std)
    lens = model.token_lengths(tr.captions)
    long = sum(n > conf["max_caption_tokens"] for n in lens)
    LOG.info("kind %s: train %d captions (mean %.1f tokens, max %d), val %d; %d training caption(s) longer than "
             "max_caption_tokens %d are truncated; decoder %s on layers %s (dim %d); device %s", kind, len(tr),
             sum(lens) / len(lens), max(lens), len(va), long, conf["max_caption_tokens"], conf["decoder"], layers,
             dim, device)
    params = [p for p in model.parameters() if p.requires_grad]
    LOG.info("%d trainable / %d parameters", sum(p.numel() for p in params),
             sum(p.numel() for p in model.parameters()))
    opt = loop.make_optimizer(conf["optim"], params, conf["optim_conf"])
    shuffle = torch.Generator().manual_seed(seed)
    metric = conf["select_metric"]
    info = {"conf": {k: v for k, v in conf.items()}, "kind": kind, "task_spec": task.spec(), "layers": layers, "dim": dim, "seed": seed,
            "config_hash": chash, "counts": {"train": tr.counts, "val": va.counts}}
    max_len = int(conf["decode_conf"]["max_len"])

    def step(idx):
        frames, lengths = pad_frames([tr.frames[i] for i in idx])
        return model.loss(frames.to(device), lengths.to(device), [tr.captions[i] for i in idx])

    def validate():
        row = {task.loss_metric: mean_loss(model, va, device)}
        if metric != task.loss_metric:   # greedy decoding of the val set, scored without Java
            hyps = generate(model, va, device, 1, max_len)
            row.update({f"val_{k}": v for k, v in task.quick_metrics(hyps, va.captions).items()})
        return row, task.selection_value(row, metric)

    fit = loop.Fit(
        model=model, optimizer=opt, num_train=len(tr), batch_size=int(conf["batch_size"]), step=step,
        clip=lambda: loop.clip_gradients(params, conf["grad_clip"]),
        validate=validate, better=lambda value, best: task.better(metric, value, best),
        best_record=lambda epoch, row: {"val": row, "info": info},
        epoch_line=lambda epoch, row, improved: (
            f"epoch {epoch} " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
            + f" ({row['seconds']:.2f} s)" + (" *best" if improved else "")),
        model_state=lambda: trainable_state(model))
    state = {"epoch": 0, "best": None, "best_epoch": 0, "bad_epochs": 0, "history": [], "truncated": long}
    if last is not None:
        state = loop.restore(fit, last, shuffle, device, strict=not conf["freeze_decoder"])
        LOG.info("resumed from %s (epoch %d done; best epoch %d)", last_path, state["epoch"], state["best_epoch"])
    state = loop.run_epochs(fit, exp_dir, chash, shuffle, state, device, conf["max_epochs"], conf["patience"],
                            conf["keep_checkpoints"], LOG.info)
    averaged = None
    if conf["average_last"]:
        # the decoded model: the mean of the last N epochs' weights, which varies less over seeds than the epoch
        # that one noisy val score picks; its own val row is recorded
        weights, averaged = average_epochs(exp_dir, conf["average_last"])
        model.load_state_dict(weights, strict=False)
        row, _ = validate()
        atomic_save({"model": weights, "epoch": averaged[-1], "averaged_epochs": averaged, "val": row,
                     "info": info}, exp_dir / "best.pt")
        LOG.info("best.pt: the mean of epochs %s (val %s)", averaged,
                 " ".join(f"{k} {v:.4f}" for k, v in row.items()))
    note = model.truncation_note()
    if note:
        LOG.warning("%s", note)
    seconds = time.monotonic() - t_start
    summary = loop.write_done(exp_dir, {
        "best_epoch": state["best_epoch"], "epochs": state["epoch"], "stopped": state["stopped"],
        "select_metric": metric, "averaged_epochs": averaged,
        "best_val": state["history"][state["best_epoch"] - 1] if state["best_epoch"] else None,
        "truncated_train_captions": state["truncated"], "config_hash": chash, "seconds_last_run": round(seconds, 2)})
    if averaged:
        # best.pt holds the mean; the other epochs were kept only to make it (each with the optimizer state: 8 MB
        # for the committed decoder); the last one stays, it names the config a rerun is compared with
        prune_epochs(exp_dir, 1)
    LOG.info("%s: %d epochs (%s), best epoch %d; %.1f s, %.0f train captions/s, peak RSS %.0f MB", exp_dir,
             state["epoch"], state["stopped"], state["best_epoch"], seconds,
             len(tr) * (state["epoch"] - state["first_epoch"]) / max(seconds, 1e-9), peak_rss_mb())
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.caption.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True, help="conf/caption/<decoder>.yaml")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="override an option")
    ap.add_argument("--kind", required=True, help="a caption kind: the caption_kind of a caption task of the "
                    "tasks YAML (conf/tasks.yaml: speaker, style, emotion, overall)")
    ap.add_argument("--tasks_conf", type=Path, default=None, help="tasks YAML (default: conf/tasks.yaml)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data_dir", type=Path, default=Path("data"))
    ap.add_argument("--feats_dir", type=Path, required=True, help="dump/<tag>")
    ap.add_argument("--exp_dir", type=Path, required=True)
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--overwrite", type=str2bool, default=False)
    ap.add_argument("--on_change", choices=provenance.ON_CHANGE, default=os.environ.get("ETSER_ON_CHANGE", "redo"),
                    help="a finished or started training whose inputs (config, captions, features) changed: redo "
                         "it, or refuse naming the changes (default: $ETSER_ON_CHANGE or redo)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run_line(args, argv, {})
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        LOG.error("%s: %s", args.exp_dir, e.args[0] if isinstance(e, KeyError) else e)
        return 1
    return 0


def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> dict:
    """One training of a job file's line (the job-module protocol: raises on failure)."""
    quiet_transformers()
    conf = load_config(args.config, args.conf)
    command = "python -m etser.caption.train " + " ".join(shlex.quote(a) for a in argv)
    return train(conf, args.kind, args.data_dir, args.feats_dir, args.exp_dir, args.seed, pick_device(args.ngpu),
                 args.num_threads, args.overwrite, command, args.on_change, args.tasks_conf)


if __name__ == "__main__":
    sys.exit(main())

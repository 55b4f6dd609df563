"""Train a speech captioner for one caption kind.

    python -m etser.caption.train --config conf/caption/transformer.yaml --kind style --seed 1 \\
        --data_dir data --feats_dir dump/<tag> --exp_dir exp/caption/<tag>/transformer/style/seed1
    python -m etser.caption.train --job_list exp/caption_train_jobs.txt --job JOB --num_jobs N

Frame-level features of ``train_set`` -> adaptor -> decoder (etser.caption.models), cross-entropy on the
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
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import yaml

from etser import provenance
from etser.caption import KINDS
from etser.caption.data import CaptionSet, caption_file, load_frames, pad_frames, read_captions, read_feats_meta
from etser.caption.config import DEFAULTS, SELECT_METRICS, TOKENIZER_FILES, check_decoder_dir, load_config  # noqa: F401
from etser.caption.models import build_model, frame_stats, trainable_state
from etser.caption.text import Tokenizer
from etser.cli import str2bool
from etser.checkpoint import atomic_save as _atomic_save, list_epochs as _checkpoints, read_checkpoint
from etser.featset import features_record
from etser.runtime import device_name, job_list_lines, peak_rss_mb as _peak_rss_mb, pick_device
from etser.train import config_hash

LOG = logging.getLogger("etser.caption.train")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def quick_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """Pure-Python BLEU-4, ROUGE-L, CIDEr-D (no Java) for checkpoint selection."""
    from etser.caption.metrics import DEFAULTS as MDEF, lexical_scores
    conf = {**MDEF, "metrics": ["bleu4", "rouge_l", "cider_d"], "ptb_tokenizer": False}
    scores, _, _ = lexical_scores(list(hyps), [[r] for r in refs], conf, log=lambda *_: None)
    return {k: scores[k] for k in ("bleu4", "rouge_l", "cider_d")}


def generate(model, cs: CaptionSet, device: str, num_beams: int, max_len: int, length_penalty: float = 1.0,
             batch_size: int = 32) -> list[str]:
    model.eval()
    out = []
    for s in range(0, len(cs), batch_size):
        frames, lengths = pad_frames(cs.frames[s:s + batch_size])
        out += model.generate(frames.to(device), lengths.to(device), num_beams, max_len, length_penalty)
    return out


@torch.no_grad()
def mean_loss(model, cs: CaptionSet, device: str, batch_size: int = 32) -> float:
    model.eval()
    total = 0.0
    for s in range(0, len(cs), batch_size):
        frames, lengths = pad_frames(cs.frames[s:s + batch_size])
        total += model.loss(frames.to(device), lengths.to(device), cs.captions[s:s + batch_size]).item() * len(
            cs.frames[s:s + batch_size])
    return total / len(cs)


def load_trained(exp_dir: Path, device: str = "cpu"):
    """The best model of a trained exp dir and its info."""
    path = Path(exp_dir) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (python -m etser.caption.train)")
    best = read_checkpoint(path)
    info = best["info"]
    conf = info["conf"]
    check_decoder_dir(conf)
    tok = Tokenizer.load(Path(exp_dir) / "tokenizer.json") if conf["decoder"] == "transformer" else None
    model = build_model(conf, len(info["layers"]), info["dim"], tok)
    model.load_state_dict(best["model"], strict=not conf["freeze_decoder"])
    return model.to(device).eval(), {**info, "epoch": best["epoch"], "val": best["val"]}


def training_identity(chash: str, kind: str, data_dir: Path, feats_dir: Path, sets: Sequence[str]) -> dict:
    """The resolved config, the caption file of every set read (content) and those sets' features (stage 2's
    record): a caption corrected, features re-extracted or a config edited changes it."""
    files = {s: caption_file(Path(data_dir) / s, kind) for s in sets}
    return {"config": chash,
            "captions": {s: provenance.content_identity(f) if f.is_file() else "missing" for s, f in files.items()},
            "features": {s: features_record(Path(feats_dir) / s) for s in sets}}


def train(conf: dict, kind: str, data_dir: Path, feats_dir: Path, exp_dir: Path, seed: int, device: str = "cpu",
          num_threads: int = 1, overwrite: bool = False, command: str = "", on_change: str = "redo") -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown caption kind {kind!r}; use one of {', '.join(KINDS)}")
    data_dir, feats_dir, exp_dir = Path(data_dir), Path(feats_dir), Path(exp_dir)
    meta = read_feats_meta(feats_dir / conf["train_set"])
    resolved = {**conf, "kind": kind, "seed": seed, "tag": feats_dir.name, "upstream": meta.get("upstream")}
    chash = config_hash({k: v for k, v in resolved.items()})
    # what the training is made from: reused (or resumed) only while all of it is unchanged
    present = training_identity(chash, kind, data_dir, feats_dir, (conf["train_set"], conf["valid_set"]))
    summary = provenance.open_training_dir(exp_dir, present, overwrite, on_change, LOG)
    if summary is not None:
        return summary
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        return _train(resolved, chash, meta, data_dir, feats_dir, exp_dir, seed, device, num_threads, command)
    finally:
        LOG.removeHandler(handler)
        handler.close()


def _train(conf, chash, meta, data_dir, feats_dir, exp_dir, seed, device, num_threads, command) -> dict:
    t_start = time.monotonic()
    torch.set_num_threads(num_threads)
    ckpts = _checkpoints(exp_dir)
    last = read_checkpoint(ckpts[-1][1]) if ckpts else None
    if last is not None and last["config_hash"] != chash:
        raise RuntimeError(f"{ckpts[-1][1]} was written with a different config: use --overwrite true to start "
                           "over, or another --exp_dir")
    LOG.info("%s %s", "resuming" if last else "starting", command or "(no command line)")
    (exp_dir / "cmd").write_text(command + "\n")
    env = {"torch": str(torch.__version__), "python": platform.python_version(), "device": device_name(device),
           "num_threads": num_threads}
    with open(exp_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({**conf, "config_hash": chash, "env": env}, f, sort_keys=False, allow_unicode=True)

    kind = conf["kind"]
    tr = read_captions(data_dir / conf["train_set"], kind, LOG.info)
    va = read_captions(data_dir / conf["valid_set"], kind, LOG.info)
    gb = float(conf["preload_frames_gb"])
    layers, dim = load_frames(tr, feats_dir / conf["train_set"], conf["layers"], gb, LOG.info)
    load_frames(va, feats_dir / conf["valid_set"], layers, gb, LOG.info)

    tok = None
    if conf["decoder"] == "transformer":
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
    opt = OPTIMIZERS[conf["optim"]](params, **conf["optim_conf"])
    shuffle = torch.Generator().manual_seed(seed)
    metric = conf["select_metric"]
    state = {"epoch": 0, "best": None, "best_epoch": 0, "bad_epochs": 0, "history": [], "truncated": long}
    if last is not None:
        model.load_state_dict(last["model"], strict=not conf["freeze_decoder"])
        opt.load_state_dict(last["optimizer"])
        torch.set_rng_state(last["torch_rng"])
        shuffle.set_state(last["shuffle_rng"])
        if last.get("cuda_rng") is not None and device != "cpu":
            torch.cuda.set_rng_state_all(last["cuda_rng"])
        state = last["state"]
        LOG.info("resumed from %s (epoch %d done; best epoch %d)", ckpts[-1][1], state["epoch"], state["best_epoch"])
    info = {"conf": {k: v for k, v in conf.items()}, "kind": kind, "layers": layers, "dim": dim, "seed": seed,
            "config_hash": chash, "counts": {"train": tr.counts, "val": va.counts}}
    bs, patience = int(conf["batch_size"]), conf["patience"]
    dc = conf["decode_conf"]
    first_epoch = state["epoch"]
    stopped = patience is not None and state["bad_epochs"] >= patience
    for epoch in range(state["epoch"] + 1, int(conf["max_epochs"]) + 1):
        if stopped:
            break
        t0 = time.monotonic()
        model.train()
        perm = torch.randperm(len(tr), generator=shuffle).tolist()
        total = 0.0
        for s in range(0, len(tr), bs):
            idx = perm[s:s + bs]
            frames, lengths = pad_frames([tr.frames[i] for i in idx])
            loss = model.loss(frames.to(device), lengths.to(device), [tr.captions[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if conf["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, float(conf["grad_clip"]))
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(tr), "val_loss": mean_loss(model, va, device)}
        if metric != "val_loss":
            hyps = generate(model, va, device, 1, int(dc["max_len"]))
            row.update({f"val_{k}": v for k, v in quick_scores(hyps, va.captions).items()})
        value = -row["val_loss"] if metric == "val_loss" else row[f"val_{metric}"]
        row["seconds"] = time.monotonic() - t0
        state["history"].append(row)
        improved = state["best"] is None or value > state["best"]
        if improved:
            state.update(best=value, best_epoch=epoch, bad_epochs=0)
            _atomic_save({"model": trainable_state(model), "epoch": epoch, "val": row, "info": info},
                         exp_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stopped = patience is not None and state["bad_epochs"] >= patience
        _atomic_save({"model": trainable_state(model), "optimizer": opt.state_dict(),
                      "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(),
                      "cuda_rng": torch.cuda.get_rng_state_all() if device != "cpu" else None,
                      "state": state, "config_hash": chash}, exp_dir / "checkpoints" / f"epoch{epoch}.pt")
        for _, old in _checkpoints(exp_dir)[:-max(1, int(conf["keep_checkpoints"]))]:
            old.unlink()
        LOG.info("epoch %d %s (%.2f s)%s", epoch, " ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                            if k not in ("epoch", "seconds")),
                 row["seconds"], " *best" if improved else "")
    if getattr(model, "truncated_inputs", 0):
        LOG.warning("%d training/validation input(s) were longer than BART's %d encoder positions and were cut",
                    model.truncated_inputs, model.max_pos)
    why = f"no val improvement for {patience} epochs" if stopped else f"max_epochs {conf['max_epochs']}"
    seconds = time.monotonic() - t_start
    summary = {"best_epoch": state["best_epoch"], "epochs": state["epoch"], "stopped": why, "select_metric": metric,
               "best_val": state["history"][state["best_epoch"] - 1] if state["best_epoch"] else None,
               "truncated_train_captions": state["truncated"], "config_hash": chash,
               "seconds_last_run": round(seconds, 2)}
    (exp_dir / "done").write_text(json.dumps(summary, indent=1) + "\n")
    LOG.info("%s: %d epochs (%s), best epoch %d; %.1f s, %.0f train captions/s, peak RSS %.0f MB", exp_dir,
             state["epoch"], why, state["best_epoch"], seconds,
             len(tr) * (state["epoch"] - first_epoch) / max(seconds, 1e-9), _peak_rss_mb())
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.caption.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True, help="conf/caption/<decoder>.yaml")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="override an option")
    ap.add_argument("--kind", required=True, help=" | ".join(KINDS))
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


def job_parser(prog: str) -> argparse.ArgumentParser:
    """``--job_list FILE --job N --num_jobs M``: run lines N, N+M, ... of a job file (arguments of one run each)."""
    ap = argparse.ArgumentParser(prog=prog, add_help=False)
    ap.add_argument("--job_list", type=Path)
    ap.add_argument("--job", type=int, default=1)
    ap.add_argument("--num_jobs", type=int, default=1)
    return ap


JOB_PARSER = job_parser("python -m etser.caption.train")


def quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_transformers()
    jobs = JOB_PARSER.parse_known_args(argv)[0]
    if jobs.job_list is None:
        return _run(argv)
    # the recipe's job file: this job's lines in one process (imports paid once); the first failure stops it
    try:
        lines = job_list_lines(jobs.job_list, jobs.job, jobs.num_jobs)
    except (ValueError, OSError) as e:
        LOG.error("%s", e)
        return 1
    for i, line in enumerate(lines, 1):
        LOG.info("job %d/%d, training %d of %d: %s", jobs.job, jobs.num_jobs, i, len(lines), shlex.join(line))
        if _run(line):
            return 1
    return 0


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        conf = load_config(args.config, args.conf)
        command = "python -m etser.caption.train " + " ".join(shlex.quote(a) for a in argv)
        train(conf, args.kind, args.data_dir, args.feats_dir, args.exp_dir, args.seed, pick_device(args.ngpu),
              args.num_threads, args.overwrite, command, args.on_change)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        LOG.error("%s: %s", args.exp_dir, e.args[0] if isinstance(e, KeyError) else e)
        return 1
    return 0



def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> None:
    """One line of a job file (etser.launch.run): one caption training; raises on failure."""
    quiet_transformers()
    conf = load_config(args.config, args.conf)
    command = "python -m etser.caption.train " + " ".join(shlex.quote(a) for a in argv)
    train(conf, args.kind, args.data_dir, args.feats_dir, args.exp_dir, args.seed, pick_device(args.ngpu),
          args.num_threads, args.overwrite, command, args.on_change)


if __name__ == "__main__":
    sys.exit(main())

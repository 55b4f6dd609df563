"""The one training loop: epochs, resume, early stopping (or none), per-epoch checkpoints, ``best.pt`` chosen on
a validation value, the run record (``cmd``, ``config.yaml``) and the ``done`` summary.

What differs between a classifier head, a fusion model and a caption decoder is given by the caller as a
:class:`Fit`: how one batch gives a loss (the model's auxiliary loss included), how the validation set is
scored, which value selects the best epoch and what ``best.pt`` records.  The loop owns the order in which
random numbers are drawn (one ``randperm`` of the training set per epoch from a generator seeded with the
seed), so that a killed run resumed from its last checkpoint ends with the same weights as an uninterrupted one.
``shuffle=False`` (the official code's unshuffled loader) takes the training set in its order every epoch and
draws nothing from that generator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from tqdm import tqdm

from etser.learn.checkpoint import atomic_save, list_epochs, load_epoch, prune_epochs
from etser.runtime import device_name

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def config_hash(conf: dict) -> str:
    """What identifies a training's configuration (16 hex digits of the sorted JSON)."""
    return hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_optimizer(name: str, params, optim_conf: dict) -> torch.optim.Optimizer:
    # the multi-tensor update, which torch picks by itself only on GPUs: on CPU it gives the same weights to the
    # bit as the per-tensor loop (tests/test_train.py), and a little faster (docs/training.md)
    return OPTIMIZERS[name](params, **{"foreach": True, **optim_conf})


def clip_gradients(params: Sequence[torch.nn.Parameter], grad_clip, mode: str = "norm") -> None:
    """``grad_clip`` > 0: clip the gradients' norm (``norm``) or each value (``value``, MERBench); else none."""
    if not grad_clip or float(grad_clip) <= 0:
        return
    if mode == "value":
        torch.nn.utils.clip_grad_value_(params, float(grad_clip))
    else:
        torch.nn.utils.clip_grad_norm_(params, float(grad_clip))


def last_checkpoint(exp_dir: Path, chash: str) -> tuple[dict | None, Path | None]:
    """The last epoch checkpoint of ``exp_dir`` (None when there is none); one of another config is refused
    before anything in the exp dir is rewritten."""
    ckpts = list_epochs(exp_dir)
    if not ckpts:
        return None, None
    last = load_epoch(ckpts[-1][1])
    if last["config_hash"] != chash:
        raise RuntimeError(f"{ckpts[-1][1]} was written with a different config: use --overwrite true to start "
                           "over, or another --exp_dir")
    return last, ckpts[-1][1]


def write_run_record(exp_dir: Path, command: str, conf: dict, chash: str, device: str, num_threads: int) -> None:
    """``cmd`` (the command line) and ``config.yaml`` (the resolved config, its hash and the environment)."""
    (exp_dir / "cmd").write_text(command + "\n")
    env = {"torch": str(torch.__version__), "python": platform.python_version(), "device": device_name(device),
           "num_threads": num_threads}
    with open(exp_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({**conf, "config_hash": chash, "env": env}, f, sort_keys=False, allow_unicode=True)


def log_file(exp_dir: Path, *loggers: logging.Logger) -> logging.Handler:
    """``exp_dir/train.log`` attached to ``loggers`` (remove it with :func:`close_log_file`)."""
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    return handler


def close_log_file(handler: logging.Handler, *loggers: logging.Logger) -> None:
    for lg in loggers:
        lg.removeHandler(handler)
    handler.close()


@dataclasses.dataclass
class Fit:
    """What one training brings to the loop.

    ``step(idx)``: the loss of the training examples ``idx`` (a scalar tensor, auxiliary losses included);
    ``validate()``: ``(row, value)``, the validation figures to record for the epoch and the value that
    selects the best epoch; ``better(value, best)``: whether ``value`` beats ``best``; ``best_record(epoch,
    row)``: what ``best.pt`` holds besides the model; ``model_state()``: the weights saved (default: all);
    ``epoch_line(epoch, row, improved)``: the line of ``train.log`` for an epoch; ``bar_text(value, best)``:
    the progress bar's figure; ``shuffle``: a new order of the training examples every epoch (else their order).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    num_train: int
    batch_size: int
    step: Callable[[list[int]], torch.Tensor]
    clip: Callable[[], None]
    validate: Callable[[], tuple[dict, float]]
    better: Callable[[float, float | None], bool]
    best_record: Callable[[int, dict], dict]
    epoch_line: Callable[[int, dict, bool], str]
    model_state: Callable[[], dict] | None = None
    bar_text: Callable[[float, float], str] = lambda value, best: ""
    shuffle: bool = True   # False: the training set in its order every epoch (the official code's loader)


def restore(fit: Fit, last: dict, shuffle: torch.Generator, device: str, strict: bool = True) -> dict:
    """Model, optimizer and random states from an epoch checkpoint; returns its loop state."""
    fit.model.load_state_dict(last["model"], strict=strict)
    fit.optimizer.load_state_dict(last["optimizer"])
    torch.set_rng_state(last["torch_rng"])
    shuffle.set_state(last["shuffle_rng"])
    if last.get("cuda_rng") is not None and device != "cpu":
        torch.cuda.set_rng_state_all(last["cuda_rng"])
    return last["state"]


def run_epochs(fit: Fit, exp_dir: Path, chash: str, shuffle: torch.Generator, state: dict, device: str,
               max_epochs: int, patience: int | None, keep_checkpoints: int, log: Callable[[str], None]) -> dict:
    """Train from ``state`` (a fresh one, or a checkpoint's) to ``max_epochs`` or until ``patience`` epochs
    without improvement; returns the state with ``stopped`` (why it ended) and ``first_epoch`` (the epoch it
    started from, > 0 when resumed)."""
    model_state = fit.model_state or fit.model.state_dict
    stopped_early = patience is not None and state["bad_epochs"] >= patience
    first_epoch = state["epoch"]
    # no bar in a job log (stderr not a terminal): carriage-return updates would run into the log lines
    bar = tqdm(total=max_epochs, initial=first_epoch, desc=f"train {exp_dir}", unit="epoch", file=sys.stderr,
               mininterval=0.5, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())
    for epoch in range(state["epoch"] + 1, int(max_epochs) + 1):
        if stopped_early:
            break
        t0 = time.monotonic()
        fit.model.train()
        perm = (torch.randperm(fit.num_train, generator=shuffle).tolist() if fit.shuffle
                else list(range(fit.num_train)))
        total = 0.0
        for s in range(0, fit.num_train, fit.batch_size):
            idx = perm[s:s + fit.batch_size]
            loss = fit.step(idx)
            fit.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            fit.clip()
            fit.optimizer.step()
            total += loss.item() * len(idx)
        row, value = fit.validate()
        row = {"epoch": epoch, "train_loss": total / fit.num_train, **row, "seconds": time.monotonic() - t0}
        state["history"].append(row)
        improved = state["best_epoch"] == 0 or fit.better(value, state["best"])
        if improved:
            state.update(best=value, best_epoch=epoch, bad_epochs=0)
            atomic_save({"model": model_state(), "epoch": epoch, **fit.best_record(epoch, row)}, exp_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stopped_early = patience is not None and state["bad_epochs"] >= patience
        atomic_save({"model": model_state(), "optimizer": fit.optimizer.state_dict(),
                     "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if device != "cpu" else None,
                     "state": state, "config_hash": chash}, exp_dir / "checkpoints" / f"epoch{epoch}.pt")
        prune_epochs(exp_dir, keep_checkpoints)
        log(fit.epoch_line(epoch, row, improved))
        bar.update(1)
        bar.set_postfix_str(fit.bar_text(value, state["best"]), refresh=False)
    bar.close()
    why = f"no val improvement for {patience} epochs" if stopped_early else f"max_epochs {max_epochs}"
    return {**state, "stopped": why, "first_epoch": first_epoch}


def write_done(exp_dir: Path, summary: dict) -> dict:
    """``done``: the summary of a finished training (a rerun of the same command skips it)."""
    (exp_dir / "done").write_text(json.dumps(summary, indent=1) + "\n")
    return summary

"""Checkpoints of an exp dir: atomic writes, per-epoch checkpoints, and the best model.

``checkpoints/epoch<N>.pt`` hold everything needed to resume (written by training); ``best.pt`` holds
``{"model": state_dict, "epoch", "val_metrics", "info"}`` where ``info`` describes the model (head, head_conf,
task, classes, streams with their layers and dims): :func:`load_best` rebuilds it from that alone, so
scoring and inference need no training code.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
from pathlib import Path

import torch

from etser.models.heads import Head, build_head
from etser.yamlfile import read_yaml


def atomic_save(obj, path: Path) -> None:
    """Write a checkpoint to a temporary file, then rename: a kill never leaves a truncated checkpoint.

    The one writer of ``.pt`` files.  torch.save serialises in memory and Python writes the bytes, so a full
    disk is an OSError "no space left on <dir>" (torch's own file writer reports it as "unexpected pos"), and
    the temporary file is removed whatever fails.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, f"no space left on {path.parent.resolve()} writing {path} "
                          f"({buf.getbuffer().nbytes} bytes): free space there, then rerun the stage "
                          "(it resumes)") from None
        raise


def read_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint read as data: tensors and plain Python values only (torch's ``weights_only``), so a file
    from an exp dir someone else wrote cannot run code here; anything else is refused, naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long and advises weights_only=False: show only what the file holds
        lines = [x.strip() for x in str(e).splitlines() if "unsupported" in x.lower()]
        what = lines[0].rstrip(".") if lines else type(e).__name__
        raise ValueError(f"{path}: refused: a checkpoint must hold only tensors and plain data, this one "
                         f"holds more ({what}); retrain it (stage 3) or read a checkpoint you trust") from None


def list_epochs(exp_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of ``exp_dir/checkpoints/epoch<N>.pt``, in epoch order."""
    found = []
    for p in (Path(exp_dir) / "checkpoints").glob("epoch*.pt"):
        try:
            found.append((int(p.stem[len("epoch"):]), p))
        except ValueError:
            continue
    return sorted(found)


def load_epoch(path: Path) -> dict:
    # on the CPU: RNG states must be CPU tensors; the model and optimizer move theirs to the device
    return read_checkpoint(path, "cpu")


def average_epochs(exp_dir: Path, n: int) -> tuple[dict, list[int]]:
    """The element-wise mean of the model weights of the last ``n`` epoch checkpoints (summed in float64, then
    cast to each weight's dtype; a non-float buffer is the last epoch's), and those epochs.  Fewer than ``n``
    checkpoints is an error naming the exp dir."""
    epochs = list_epochs(exp_dir)[-int(n):]
    if len(epochs) < int(n):
        raise ValueError(f"{exp_dir}: averaging the last {n} epochs needs {n} epoch checkpoints, found "
                         f"{len(epochs)} (keep_checkpoints must be at least average_last)")
    states = [load_epoch(p)["model"] for _, p in epochs]
    avg = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
           for k, v in states[-1].items()}
    return avg, [e for e, _ in epochs]


def prune_epochs(exp_dir: Path, keep: int) -> None:
    for _, old in list_epochs(exp_dir)[:-max(1, int(keep))]:
        old.unlink()


def load_best(exp_dir: Path, device: str = "cpu") -> tuple[Head, dict]:
    """The best model of a trained exp dir and its description (head, task, classes, streams, ...)."""
    path = Path(exp_dir) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (stage 3)")
    best = read_checkpoint(path, device)
    info = best["info"]
    model = build_head(info["head"], info["head_conf"], info["streams"], info["output_size"])
    model.load_state_dict(best["model"])
    model.to(device).eval()
    return model, {**info, "epoch": best["epoch"], "val_metrics": best["val_metrics"]}


def read_exp_config(exp_dir: Path) -> dict:
    """The resolved training config an exp dir records (``config.yaml``)."""
    path = Path(exp_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (stage 3)")
    return read_yaml(path)

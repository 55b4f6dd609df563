"""Checkpoints of an exp dir: atomic writes, per-epoch checkpoints, and the best model.

``checkpoints/epoch<N>.pt`` hold everything needed to resume (written by training); ``best.pt`` holds
``{"model": state_dict, "epoch", "val_metrics", "info"}`` where ``info`` describes the model (head, head_conf,
task, classes, streams with their layers and dims): :func:`load_best` rebuilds it from that alone, so
scoring and inference need no training code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from etser.heads import Head, build_head


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a truncated checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    return torch.load(path, map_location="cpu", weights_only=False)


def prune_epochs(exp_dir: Path, keep: int) -> None:
    for _, old in list_epochs(exp_dir)[:-max(1, int(keep))]:
        old.unlink()


def load_best(exp_dir: Path, device: str = "cpu") -> tuple[Head, dict]:
    """The best model of a trained exp dir and its description (head, task, classes, streams, ...)."""
    path = Path(exp_dir) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (stage 3)")
    best = torch.load(path, map_location=device, weights_only=False)
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
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)

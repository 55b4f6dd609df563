"""Captions of one kind and the frame-level features they describe.

Reads the captions of a caption task (``data/<set>/utt2caption_<kind>``, through the task:
:mod:`etser.tasks.caption`) and stage 2's ``dump/<tag>/<set>/frames.scp`` / ``meta.json`` (docs/DESIGN.md).
Utterances with an empty caption, or one of punctuation only (no word for a decoder to learn or a metric to
match), are left out, counted and named; utterances with a caption but no features are an error (rerun
stage 2).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from etser.featset import load_stream, read_meta

LOG = logging.getLogger("etser.caption")


@dataclasses.dataclass
class CaptionSet:
    utts: list[str]
    captions: list[str]
    counts: dict[str, int]                 # with_caption, empty, no_words, without_caption (of the set's utts)
    frames: Sequence[torch.Tensor] | None = None  # per utterance (T, L', D): a list or LazyFrames

    def __len__(self) -> int:
        return len(self.utts)


def task_of(task, tasks_conf=None):
    """A caption task given as itself or by its caption kind (``style``: the task of the tasks YAML)."""
    from etser.tasks.caption import CaptionTask, caption_task

    return task if isinstance(task, CaptionTask) else caption_task(task, tasks_conf)


def caption_file(data_set_dir: Path, task, tasks_conf=None) -> Path:
    return Path(data_set_dir) / task_of(task, tasks_conf).label_file


def read_captions(data_set_dir: Path, task, log: Callable = LOG.info, tasks_conf=None) -> CaptionSet:
    """Non-empty captions of a caption task (or caption kind) in ``data_set_dir``, with counts of what was left
    out (the task's targets)."""
    utts, captions, counts = task_of(task, tasks_conf).read_targets(data_set_dir, log)
    return CaptionSet(utts, captions, counts)


def resolve_layers(layers, frame_layers: Sequence[int], where: str) -> list[int]:
    """``all`` / null -> every dumped frame layer; an int or a list -> those, which must have been dumped."""
    if layers in (None, "all"):
        return list(frame_layers)
    layers = [layers] if isinstance(layers, int) else list(layers)
    missing = [x for x in layers if x not in frame_layers]
    if missing:
        raise ValueError(f"{where}: layers {missing} were not dumped (frame_layers {list(frame_layers)}); "
                         "change 'layers' or the upstream's frame_layers")
    return layers


class LazyFrames(SequenceABC):
    """Per-utterance frames read from the scp on access (sets larger than ``preload_frames_gb``)."""

    def __init__(self, utts: Sequence[str], read: Callable[[str], torch.Tensor]):
        self.utts, self.read = list(utts), read

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.read(u) for u in self.utts[i]]
        return self.read(self.utts[i])


def load_frames(cs: CaptionSet, feats_set_dir: Path, layers: Sequence[int] | None, preload_frames_gb: float = 2.0,
                log: Callable = LOG.info) -> tuple[list[int], int]:
    """Fill ``cs.frames`` with (T, len(layers), D) tensors read by the one feature reader
    (:func:`etser.featset.load_stream`: held in memory up to ``preload_frames_gb``, else read per batch);
    returns (layers, D)."""
    feats_set_dir = Path(feats_set_dir)
    meta = read_meta(feats_set_dir)
    frame_layers = list(meta.get("frame_layers") or [])
    if not (feats_set_dir / "frames.scp").is_file() or not frame_layers:
        raise FileNotFoundError(f"{feats_set_dir / 'frames.scp'} not found: captioning needs frame-level features; "
                                "set frame_layers in the upstream config and rerun stage 2")
    layers = resolve_layers(layers, frame_layers, str(feats_set_dir / "meta.json"))
    data = load_stream(feats_set_dir, cs.utts, layers, "frames", where=f"the {len(cs.utts)} captioned utterances",
                       log=log, preload_frames_gb=preload_frames_gb)
    # contiguous, as the decoders' frame statistics were computed on until now (same sums, same round-off)
    if data.frames is not None:
        cs.frames = [f.contiguous() for f in data.frames]
    else:
        cs.frames = LazyFrames(cs.utts, lambda u: data.frame_reader(u).contiguous())
    return layers, int(meta["dim"])


def pad_frames(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in seqs])
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True), lengths


def pooled(cs: CaptionSet) -> np.ndarray:
    """(N, L'·D) time-mean of each utterance's frames (the nearest-neighbour baseline's space)."""
    return np.stack([f.double().mean(0).reshape(-1).numpy() for f in cs.frames])

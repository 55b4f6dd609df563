"""Bringing frame sequences of several modalities to a common length, the way MERBench does
(toolkit/utils/read_data.py: func_mapping_feature, feature_scale_compress, align_to_text), plus batching.

``map_length(feat, n)`` maps a (T, D) sequence to (n, D):

* T == n: unchanged;
* T < n: ``n - T`` zero frames are put in FRONT;
* T > n: pool = ceil(T / n); ``n * pool - T`` zero frames are put in front, then each run of ``pool`` adjacent
  frames is averaged (the zeros count in the mean of the first runs; when n * pool - T >= pool the first
  output frames are all zero: MERBench's behaviour, kept so that features match).

Feature types (MERBench's main-release.py fixes the compression factor per type, ``FEAT_SCALE``):

* ``utt``: the time-mean of each sequence (B, D);
* ``frm_align``: every sequence compressed by 6 (``map_length(f, ceil(T / 6))``), then audio and visual mapped
  to the text's (compressed) length, so all modalities have the same length per utterance;
* ``frm_unalign``: every sequence compressed by 12, each modality keeps its own length.

MERBench then front-pads every sequence to the longest of the whole split (its LSTMs read the last frame);
here :func:`pad_batch` pads at the END per batch and returns the lengths, which every frame-level model uses.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

FEAT_SCALE = {"utt": 1, "frm_align": 6, "frm_unalign": 12}


def map_length(feat: np.ndarray, n: int) -> np.ndarray:
    """(T, D) -> (n, D) by front zero-padding and averaging adjacent frames (see the module docstring)."""
    feat = np.asarray(feat, dtype=np.float32)
    if feat.ndim != 2 or len(feat) < 1:
        raise ValueError(f"map_length needs a (T>=1, D) sequence, got shape {feat.shape}")
    if n < 1:
        raise ValueError(f"map_length: target length must be >= 1, got {n}")
    t, d = feat.shape
    if t == n:
        return feat
    if t < n:
        return np.concatenate([np.zeros((n - t, d), np.float32), feat])
    pool = math.ceil(t / n)
    padded = np.concatenate([np.zeros((n * pool - t, d), np.float32), feat])
    return padded.reshape(n, pool, d).mean(1)


def compress(feat: np.ndarray, scale: int) -> np.ndarray:
    """Shorten a (T, D) sequence by ``scale``: ``map_length(feat, ceil(T / scale))``."""
    if int(scale) < 1:
        raise ValueError(f"compression scale must be >= 1, got {scale}")
    return map_length(feat, math.ceil(len(feat) / int(scale)))


def prepare(feats: Mapping[str, np.ndarray], feat_type: str, text: str = "text",
            scale: int | None = None) -> dict[str, np.ndarray]:
    """One utterance's sequences (modality -> (T_m, D_m)) in ``feat_type`` form (see the module docstring)."""
    if feat_type not in FEAT_SCALE:
        raise ValueError(f"unknown feat_type {feat_type!r}; known: {sorted(FEAT_SCALE)}")
    if feat_type == "utt":
        return {m: np.asarray(f, np.float32).mean(0) for m, f in feats.items()}
    s = FEAT_SCALE[feat_type] if scale is None else int(scale)
    out = {m: compress(f, s) for m, f in feats.items()}
    if feat_type == "frm_align":
        if text not in out:
            raise ValueError(f"frm_align maps every modality to the {text!r} length, but there is no {text!r} "
                             f"stream (have {sorted(out)})")
        n = len(out[text])
        out = {m: map_length(f, n) for m, f in out.items()}
    return out


def pad_batch(seqs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, D) sequences -> ((B, T_max, D) zero-padded at the end, (B,) lengths)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    batch = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(np.asarray(s, np.float32)) for s in seqs],
                                            batch_first=True)
    return batch, lengths

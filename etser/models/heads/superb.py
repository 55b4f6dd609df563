"""``superb`` is S3PRL's emotion-recognition head: softmax-weighted sum of all layers, Linear(D, 256), mean pooling
over time, Linear(256, C).  Mean pooling commutes with the per-frame affine maps before it, so computing it from
the per-layer time-means is exact, not an approximation; :meth:`SuperbHead.forward_frames` is the frame-level
path that proves it (tests/test_heads.py).  With ``stats: [mean, std]`` the per-layer time-std goes through its
own softmax layer weights and Linear(D, 256) and is added before the classifier (statistics pooling): S3PRL's
``fbank`` normalises every utterance to zero time-mean, so a mean-only head sees the same input for every
utterance.  The frame-level path computes the same std from frames, so it stays exactly equivalent."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register
from etser.models.heads import Head, _check_stats, length_mask, masked_mean_std


@register("head", "superb")
class SuperbHead(Head):
    """S3PRL's ER head (weighted layer sum -> Linear(D, proj_dim) -> mean pool -> Linear(C)), + optional std."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, proj_dim: int = 256,
                 stats: Sequence[str] = ("mean",), normalize: bool = False):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        # zeros: uniform softmax weights at the start, as S3PRL's Featurizer.
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.proj = nn.Linear(dim, proj_dim) if "mean" in self.stats else None
        if "std" in self.stats:
            self.std_layer_logits = nn.Parameter(torch.zeros(num_layers))
            self.std_proj = nn.Linear(dim, proj_dim)
        self.out = nn.Linear(proj_dim, num_classes)

    def layer_weights(self) -> torch.Tensor:
        return F.softmax(self.layer_logits, dim=0)

    def _std_term(self, std: torch.Tensor) -> torch.Tensor:
        w = F.softmax(self.std_layer_logits, dim=0)
        return self.std_proj(torch.einsum("l,bld->bd", w, self.norm_std(std)))

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled path: batch['mean'], batch['std'] (B, L, D)."""
        hidden = 0
        if self.proj is not None:
            hidden = self.proj(torch.einsum("l,bld->bd", self.layer_weights(), self.norm_mean(batch["mean"])))
        if "std" in self.stats:
            hidden = hidden + self._std_term(batch["std"])
        return self.out(hidden)

    def forward_frames(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frame-level path, S3PRL's order of operations: frames (B, T, L, D) of all layers, lengths (B,)."""
        hidden = 0
        if self.proj is not None:
            x = torch.einsum("l,btld->btd", self.layer_weights(), self.norm_mean(frames))
            projected = self.proj(x)                                   # (B, T, proj_dim)
            mask = length_mask(lengths, frames.shape[1]).to(projected.dtype)[..., None]
            hidden = (projected * mask).sum(1) / lengths.to(projected.dtype)[:, None]
        if "std" in self.stats:
            _, std = masked_mean_std(frames, lengths)
            hidden = hidden + self._std_term(std)
        return self.out(hidden)

"""Attentive statistics pooling over frames (``head: attentive``)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register
from etser.models.heads import Head, _check_stats, length_mask


@register("head", "attentive")
class AttentiveHead(Head):
    """Frame-level: weighted layer sum -> Linear+ReLU -> attentive (statistics) pooling -> MLP.

    Padded frames are zeroed and get -inf attention logits before the softmax, so their weight is exactly 0
    (S3PRL's SelfAttentionPooling adds a 0/-1e5 mask, which leaks weight onto padding for short utterances
    in long batches and lets padded values through).
    """

    input_kind = "frames"
    eval_batch_size = 32       # padded frame batches grow with the longest utterance

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """The dumped frame layers."""
        if not frame_layers:
            raise ValueError("attentive head needs frame-level features: the feature dump has no frames.scp; "
                             "set frame_layers in the upstream config and rerun stage 2")
        return list(frame_layers)

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden_dim: int = 256, attn_dim: int = 128,
                 dropout: float = 0.1, stats: Sequence[str] = ("mean", "std"), normalize: bool = True):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.pre = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))
        self.post = nn.Sequential(nn.Linear(hidden_dim * len(self.stats), hidden_dim), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))

    def attention_weights(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (B, T, H), attention weights (B, T)); weights are 0 on padding and sum to 1."""
        if bool((lengths < 1).any()):
            raise ValueError("attentive head: an utterance has no frames")
        mask = length_mask(lengths, frames.shape[1])
        frames = frames.masked_fill(~mask[:, :, None, None], 0.0)
        x = torch.einsum("l,btld->btd", F.softmax(self.layer_logits, dim=0), self.norm_mean(frames))
        hidden = self.pre(x) * mask[..., None].to(x.dtype)
        logits = self.attention(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))
        return hidden, F.softmax(logits, dim=1)

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden, w = self.attention_weights(batch["frames"], batch["lengths"])
        mean = torch.einsum("bt,bth->bh", w, hidden)
        parts = [mean] if "mean" in self.stats else []
        if "std" in self.stats:
            var = torch.einsum("bt,bth->bh", w, hidden ** 2) - mean ** 2
            parts.append(var.clamp(min=1e-8).sqrt())
        return self.post(torch.cat(parts, dim=-1))

"""A fixed-MLP unimodal head (``head: mlp``) over the unweighted sum of the last layers' time-means."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn

from etser.models import register
from etser.models.heads import Head, _check_stats


@register("head", "mlp")
class MLPHead(Head):
    """Fixed unweighted sum of the last layers' time-means, then an MLP (not the official code's head: that is
    ``paper``, the attention model over the same feature three times)."""

    layer_options = ("last_layers",)

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """The last ``last_layers`` (4, or all when the upstream has fewer)."""
        k = int(head_conf.get("last_layers", 4))
        return list(range(max(0, num_layers - k), num_layers))

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden_dims: Sequence[int] = (256, 128, 64),
                 dropout: float = 0.3, stats: Sequence[str] = ("mean",), normalize: bool = False):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        layers: list[nn.Module] = []
        width = dim * len(self.stats)
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if "mean" in self.stats:
            parts.append(self.norm_mean(batch["mean"]).sum(1))
        if "std" in self.stats:
            parts.append(self.norm_std(batch["std"]).sum(1))
        return self.mlp(torch.cat(parts, dim=-1))

"""The official code's unimodal head (``head: paper``): the attention fusion model fed the same feature three times.

The official EmotionTalk code (a copy of MERBench) has no unimodal model: its unimodal rows run
``main-release.py --model attention`` with the same feature given as the audio, text and video input.  So this
head is :class:`etser.models.fusion.attention.Attention` over three copies of one stream (three encoders of
their own, the scorer over their concatenation), under its official details when ``fusion_conf`` says
``official: true`` (conf/train/paper.yaml).  Its input is the official feature: the unweighted sum of the last
layers' time-means (MERBench sums the last 4 hidden states and averages over time; the pooled cache holds each
layer's time-mean, whose sum is the same), read from the pooled cache like the superb head, so one training
costs what a superb training costs.  ``normalize: false`` feeds it raw, as the official code does.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from etser.models import register
from etser.models.heads import Head

# the official code's three inputs, in its order (audio, text, video): each gets its own encoder
COPIES = ("audio", "text", "video")


@register("head", "paper")
class PaperHead(Head):
    """Attention fusion over the same feature three times (MERBench's unimodal rows)."""

    layer_options = ("last_layers",)

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """The last ``last_layers`` (4, or all when the upstream has fewer)."""
        k = int(head_conf.get("last_layers", 4))
        return list(range(max(0, num_layers - k), num_layers))

    def __init__(self, num_layers: int, dim: int, num_classes: int, fusion_conf: Mapping | None = None,
                 normalize: bool = False):
        from etser.models.fusion import build_fusion

        super().__init__(num_layers, dim, num_classes, normalize)
        self.model = build_fusion("attention", {m: dim for m in COPIES}, num_classes, dict(fusion_conf or {}))

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = self.norm_mean(batch["mean"]).sum(1)
        return self.model({m: x for m in COPIES}).logits

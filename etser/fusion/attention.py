"""Attention fusion, the official EmotionTalk/MERBench baseline.

Per-modality MLP encoders (utterance level), their concatenation through an MLP gives one attention score per
modality, the softmax-weighted sum of the encodings is the fused vector, a Linear gives the logits.
Missing modality: DROPPED: its score is masked out of the softmax (and its encoding zeroed), so the weights of
the present modalities sum to 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from etser.models import register

from .base import FusionModel, FusionOutput, MLPEncoder, gate


@register("fusion")
class Attention(FusionModel):
    name = "attention"
    level = "utterance"
    defaults = {"hidden_dim": 128, "dropout": 0.3}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        n = len(self.modalities)
        self.scorer = nn.Sequential(nn.Linear(n * h, h), nn.ReLU(), nn.Linear(h, n))
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(h, self.output_dim)

    def fuse(self, x, lengths, present):
        hs = [gate(self.encoders[m](x[m]), present[m]) for m in self.modalities]
        mask = torch.stack([present[m] for m in self.modalities], 1)
        scores = self.scorer(torch.cat(hs, 1)).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, 1)  # (B, M)
        fused = (torch.stack(hs, 1) * weights.unsqueeze(-1)).sum(1)
        return FusionOutput(self.out(self.drop(fused)), self.zero(), fused)

"""Attention fusion, the official EmotionTalk/MERBench baseline.

Per-modality MLP encoders (utterance level), their concatenation through an MLP gives one attention score per
modality, the softmax-weighted sum of the encodings is the fused vector, a Linear gives the logits.
Missing modality: DROPPED: its score is masked out of the softmax (and its encoding zeroed), so the weights of
the present modalities sum to 1.

Official details (``official: true``, or each key alone): ``raw_weights`` (the scores weight the encodings as
they are, no softmax; a missing modality's weight is 0), ``merbench_scorer`` (the scorer is MERBench's
MLPEncoder, dropout then three Linear+ReLU, then Linear(h, M); ours: one hidden layer) and ``output_dropout``
(ours: dropout before the output Linear; the official code has none).
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
    defaults = {"hidden_dim": 128, "dropout": 0.3,
                "raw_weights": None, "merbench_scorer": None, "output_dropout": None}
    official_details = {"raw_weights": (False, True), "merbench_scorer": (False, True),
                        "output_dropout": (True, False)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        n = len(self.modalities)
        if self.detail("merbench_scorer"):
            self.scorer = nn.Sequential(MLPEncoder(n * h, h, p), nn.Linear(h, n))
        else:
            self.scorer = nn.Sequential(nn.Linear(n * h, h), nn.ReLU(), nn.Linear(h, n))
        self.raw_weights = bool(self.detail("raw_weights"))
        self.drop = nn.Dropout(p) if self.detail("output_dropout") else nn.Identity()
        self.out = nn.Linear(h, self.output_dim)

    def fuse(self, x, lengths, present):
        hs = [gate(self.encoders[m](x[m]), present[m]) for m in self.modalities]
        mask = torch.stack([present[m] for m in self.modalities], 1)
        scores = self.scorer(torch.cat(hs, 1))
        if self.raw_weights:
            weights = scores * mask.to(scores.dtype)  # (B, M), any sign and scale
        else:
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), 1)
        fused = (torch.stack(hs, 1) * weights.unsqueeze(-1)).sum(1)
        return FusionOutput(self.out(self.drop(fused)), self.zero(), fused)

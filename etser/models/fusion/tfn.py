"""Tensor Fusion Network (Zadeh et al., EMNLP 2017).

Per-modality MLP encoders, each encoding gets a constant 1 appended, their outer product ((h+1)^M values, which
holds every unimodal, bimodal and trimodal interaction) goes through dropout and two ReLU layers.
Missing modality: ZEROED encoding; the appended 1 stays, so the product keeps the terms of the present
modalities and loses exactly those involving the absent one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register

from .base import FusionModel, FusionOutput, MLPEncoder, gate


@register("fusion")
class TFN(FusionModel):
    name = "tfn"
    level = "utterance"
    defaults = {"hidden_dim": 64, "dropout": 0.3}
    max_modalities = 3  # (h+1)^M grows too fast beyond three

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        self.drop = nn.Dropout(p)
        self.fc1 = nn.Linear((h + 1) ** len(self.modalities), h)
        self.fc2 = nn.Linear(h, h)
        self.out = nn.Linear(h, self.output_dim)

    def fuse(self, x, lengths, present):
        prod = None
        for m in self.modalities:
            z = gate(self.encoders[m](x[m]), present[m])
            z = torch.cat([z, z.new_ones(z.size(0), 1)], 1)
            prod = z if prod is None else (prod.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        feats = F.relu(self.fc2(F.relu(self.fc1(self.drop(prod)))))
        return FusionOutput(self.out(feats), self.zero(), feats)

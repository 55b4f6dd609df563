"""Low-rank Multimodal Fusion (Liu et al., ACL 2018).

The TFN outer product with its weight tensor factorised into ``rank`` modality-specific factors: for each rank,
the product over modalities of ([h_m, 1] @ W_m), then a learned weighted sum over ranks plus a bias.
Missing modality: ZEROED encoding (the appended 1 stays), as in TFN.

Official details (``official: true``, or each key alone): ``half_output`` (the factors map to h//2, the
fused vector's size; ours: h) and ``output_dropout`` (ours: dropout on the fused vector; the official code
defines it and never applies it).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from etser.models import register

from .base import FusionModel, FusionOutput, MLPEncoder, gate


@register("fusion")
class LMF(FusionModel):
    name = "lmf"
    level = "utterance"
    defaults = {"hidden_dim": 128, "dropout": 0.3, "rank": 4,
                "half_output": None, "output_dropout": None}
    official_details = {"half_output": (False, True), "output_dropout": (True, False)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p, r = int(self.conf["hidden_dim"]), float(self.conf["dropout"]), int(self.conf["rank"])
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        o = h // 2 if self.detail("half_output") else h
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.empty(r, h + 1, o)) for m in self.modalities})
        for f in self.factors.values():
            nn.init.xavier_normal_(f)
        self.rank_weights = nn.Parameter(torch.empty(1, r))
        nn.init.xavier_normal_(self.rank_weights)
        self.bias = nn.Parameter(torch.zeros(1, o))
        self.drop = nn.Dropout(p) if self.detail("output_dropout") else nn.Identity()
        self.out = nn.Linear(o, self.output_dim)

    def fuse(self, x, lengths, present):
        fused = None
        for m in self.modalities:
            z = gate(self.encoders[m](x[m]), present[m])
            z = torch.cat([z, z.new_ones(z.size(0), 1)], 1)
            f = torch.einsum("bi,rih->rbh", z, self.factors[m])  # (rank, B, h)
            fused = f if fused is None else fused * f
        feats = torch.einsum("or,rbh->bh", self.rank_weights, fused) + self.bias
        return FusionOutput(self.out(self.drop(feats)), self.zero(), feats)

"""MISA: Modality-Invariant and -Specific Representations (Hazarika et al., ACM MM 2020).

Per-modality MLP encoders, a projection (Linear+ReLU+LayerNorm), then a private encoder per modality and ONE
shared encoder for all (Linear+Sigmoid each); a one-layer Transformer over the 2M vectors, their concatenation
through a fusion MLP.  Auxiliary loss, as MERBench weights it:
``diff_weight * difference + sim_weight * CMD / n_pairs + recon_weight * reconstruction / M``

* difference: soft orthogonality ||A^T B||_F^2 of the centred, L2-normalised private/shared vectors (private vs
  shared of each modality, and private vs private of every pair);
* CMD (central moment discrepancy, 5 moments) between the shared vectors of every pair of modalities;
* reconstruction: MSE between decoder(private + shared) and the projected utterance vector.

Missing modality: DROPPED: its two vectors are masked out of the Transformer's attention and zeroed before the
fusion MLP, and its rows leave every auxiliary term.

Official details (``official: true``, or each key alone): ``torch_transformer`` (the Transformer layer with
torch's default sizes, FFN 2048 and dropout 0.1; ours: FFN 2h, dropout p) and ``half_output`` (the fusion MLP
ends in h//2; ours: h).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register

from .base import FusionModel, FusionOutput, MLPEncoder


def diff_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality of two (N, H) sets: mean of (a_n^T b)^2 over the centred, normalised columns."""
    a = F.normalize(a - a.mean(0, keepdim=True), dim=1, eps=1e-6)
    b = F.normalize(b - b.mean(0, keepdim=True), dim=1, eps=1e-6)
    return (a.t() @ b).pow(2).mean()


def cmd_loss(a: torch.Tensor, b: torch.Tensor, n_moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy between (N, H) samples: distance of the means plus of central moments 2..K."""
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = a - ma, b - mb
    total = (ma - mb).norm()
    for k in range(2, n_moments + 1):
        total = total + (ca.pow(k).mean(0) - cb.pow(k).mean(0)).norm()
    return total


@register("fusion")
class MISA(FusionModel):
    name = "misa"
    level = "utterance"
    defaults = {"hidden_dim": 128, "dropout": 0.3, "sim_weight": 0.1, "diff_weight": 0.1, "recon_weight": 0.1,
                "torch_transformer": None, "half_output": None}
    official_details = {"torch_transformer": (False, True), "half_output": (False, True)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        n = len(self.modalities)
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.LayerNorm(h))
                                      for m in self.modalities})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(h, h), nn.Sigmoid()) for m in self.modalities})
        self.shared = nn.Sequential(nn.Linear(h, h), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(h, h) for m in self.modalities})
        sizes = {} if self.detail("torch_transformer") else {"dim_feedforward": 2 * h, "dropout": p}
        layer = nn.TransformerEncoderLayer(h, nhead=2, batch_first=True, **sizes)
        self.transformer = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        o = h // 2 if self.detail("half_output") else h
        self.fusion = nn.Sequential(nn.Linear(2 * n * h, 3 * h), nn.Dropout(p), nn.ReLU(), nn.Linear(3 * h, o))
        self.out = nn.Linear(o, self.output_dim)

    def fuse(self, x, lengths, present):
        ms = self.modalities
        u = {m: self.project[m](self.encoders[m](x[m])) for m in ms}
        priv = {m: self.private[m](u[m]) for m in ms}
        shar = {m: self.shared(u[m]) for m in ms}
        mask = torch.stack([present[m] for m in ms], 1)  # (B, M)
        tokens = torch.stack([priv[m] for m in ms] + [shar[m] for m in ms], 1)  # (B, 2M, H)
        keep = torch.cat([mask, mask], 1)
        enc = self.transformer(tokens, src_key_padding_mask=~keep)
        enc = enc * keep.unsqueeze(-1).to(enc.dtype)
        feats = self.fusion(enc.flatten(1))

        diff = feats.new_zeros(())
        for m in ms:
            rows = present[m]
            if int(rows.sum()) >= 2:
                diff = diff + diff_loss(priv[m][rows], shar[m][rows])
        sim, n_pairs = feats.new_zeros(()), 0
        for a, b in combinations(ms, 2):
            rows = present[a] & present[b]
            n_pairs += 1
            if int(rows.sum()) >= 2:
                diff = diff + diff_loss(priv[a][rows], priv[b][rows])
                sim = sim + cmd_loss(shar[a][rows], shar[b][rows])
        recon = feats.new_zeros(())
        for m in ms:
            rows = present[m]
            if bool(rows.any()):
                recon = recon + F.mse_loss(self.recon[m](priv[m] + shar[m])[rows], u[m][rows])
        c = self.conf
        aux = (float(c["diff_weight"]) * diff + float(c["sim_weight"]) * sim / n_pairs
               + float(c["recon_weight"]) * recon / len(ms))
        return FusionOutput(self.out(feats), aux, feats)

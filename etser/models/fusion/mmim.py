"""MMIM: MultiModal InfoMax (Han et al., EMNLP 2021); the seeds' "MMIN" row, ``mmim`` in MERBench.

Per-modality encoders, a fusion network (dropout, two tanh layers) over their concatenation, a Linear output.
Two mutual-information terms, combined as in MERBench: ``aux = alpha * nce - beta * lld``

* MMILB (modality-level lower bound): from the anchor modality (``text`` when present in the model, else the
  first) a Gaussian predictor (mu, log-variance MLPs) of every other modality's encoding; ``lld`` is the mean
  Gaussian log-likelihood (up to constants, <= 0), so ``-beta * lld >= 0`` rewards predictable pairs;
* CPC (fusion-level): each modality's encoding is predicted from the fused vector and scored against the other
  utterances of the batch (InfoNCE on unit vectors); ``nce`` and ``lld`` are sums over modalities.

Missing modality: ZEROED encoding before the fusion network; its rows leave both terms.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from etser.models import register

from .base import FusionModel, FusionOutput, MLPEncoder, gate


class MMILB(nn.Module):
    def __init__(self, x_dim: int, y_dim: int):
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        return (-(mu - y).pow(2) / 2.0 / logvar.exp()).sum(-1).mean()


class CPC(nn.Module):
    def __init__(self, x_dim: int, y_dim: int, n_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(y_dim if i == 0 else x_dim, x_dim))
            if i < n_layers - 1:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = nn.functional.normalize(self.net(y), dim=1)
        x = nn.functional.normalize(x, dim=1)
        pos = (x * pred).sum(-1)
        neg = torch.logsumexp(x @ pred.t(), dim=-1)
        return -(pos - neg).mean()


@register("fusion")
class MMIM(FusionModel):
    name = "mmim"
    level = "utterance"
    defaults = {"hidden_dim": 128, "dropout": 0.1, "cpc_layers": 1, "alpha": 0.1, "beta": 0.1}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        n_cpc = int(self.conf["cpc_layers"])
        if n_cpc < 1:
            raise ValueError(f"fusion 'mmim': cpc_layers must be >= 1, got {n_cpc}")
        self.anchor = "text" if "text" in self.modalities else self.modalities[0]
        self.encoders = nn.ModuleDict({m: MLPEncoder(d, h, p) for m, d in self.input_dims.items()})
        self.mmilb = nn.ModuleDict({m: MMILB(h, h) for m in self.modalities if m != self.anchor})
        self.cpc = nn.ModuleDict({m: CPC(h, h, n_cpc) for m in self.modalities})
        n = len(self.modalities)
        self.fusion = nn.Sequential(nn.Dropout(p), nn.Linear(n * h, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        self.out = nn.Linear(h, self.output_dim)

    def fuse(self, x, lengths, present):
        hs = {m: gate(self.encoders[m](x[m]), present[m]) for m in self.modalities}
        fused = self.fusion(torch.cat([hs[m] for m in self.modalities], 1))
        lld = fused.new_zeros(())
        for m, net in self.mmilb.items():
            rows = present[self.anchor] & present[m]
            if bool(rows.any()):
                lld = lld + net(hs[self.anchor][rows], hs[m][rows])
        nce = fused.new_zeros(())
        for m, net in self.cpc.items():
            rows = present[m]
            if bool(rows.any()):
                nce = nce + net(hs[m][rows], fused[rows])
        aux = float(self.conf["alpha"]) * nce - float(self.conf["beta"]) * lld
        return FusionOutput(self.out(fused), aux, fused)

"""MFM: Multimodal Factorization Model (Tsai et al., ICLR 2019); aligned frames only.

A discriminative factor from an MFN over all modalities (z_y) and one generative factor per modality from its
own length-aware LSTM encoder (z_m); each goes through a small MLP (f_y, f_m).  The prediction uses f_y only;
a per-modality LSTM decoder regenerates the modality's frames from [f_y, f_m].  Auxiliary loss, as MERBench:
``lda_mmd * sum of MMD(z, N(0, I)) over z_y and every z_m  +  sum_m lda_x<role> * MSE(reconstruction_m)``
(``lda_xl`` text, ``lda_xa`` audio/speech, ``lda_xv`` visual/video).  The MMD uses a Gaussian kernel against
fresh standard-normal samples (torch's RNG); the reconstruction MSE counts valid frames only.
Missing modality: ZEROED in the MFN (as MFN) and its generative factor is zeroed; its rows leave its MMD and
reconstruction terms.

Official detail (``official: true``, or the key alone): ``kernel_div_dim``: the official kernel is
``exp(-mean(d^2) / dim)``; ours leaves out ``/ dim`` (so our MMD is 17-262x larger at h = 128/256).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from etser.models import register

from .base import FusionModel, FusionOutput, LSTMEncoder, gate, length_mask, masked_mse, role
from .mfn import MFN


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, div_dim: bool = False) -> torch.Tensor:
    d2 = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).mean(-1)
    return torch.exp(-d2 / a.size(-1) if div_dim else -d2)


def mmd_to_normal(z: torch.Tensor, div_dim: bool = False) -> torch.Tensor:
    """Maximum mean discrepancy between the rows of ``z`` and as many N(0, I) samples; ``div_dim``: the
    official kernel, whose exponent is also divided by the dimension (a much flatter kernel, a smaller MMD)."""
    s = torch.randn_like(z)
    def k(a, b):
        return gaussian_kernel(a, b, div_dim).mean()
    return k(z, z) + k(s, s) - 2 * k(z, s)


class Decoder(nn.Module):
    """Unrolls an LSTMCell for T steps from one vector (its output is the next step's input)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.cell = nn.LSTMCell(dim, dim)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, v: torch.Tensor, steps: int) -> torch.Tensor:
        h, c = v.new_zeros(v.shape), v.new_zeros(v.shape)
        inp, hs = v, []
        for _ in range(steps):
            h, c = self.cell(inp, (h, c))
            hs.append(h)
            inp = h
        return self.out(torch.stack(hs, 1))


@register("fusion")
class MFM(FusionModel):
    name = "mfm"
    level = "frame"
    aligned = True
    defaults = {"hidden_dim": 128, "mem_dim": 128, "dropout": 0.3, "window_dim": 2,
                "lda_xl": 0.1, "lda_xa": 0.1, "lda_xv": 0.1, "lda_mmd": 10.0,
                "kernel_div_dim": None}
    official_details = {"kernel_div_dim": (False, True)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        f = h // 2
        self.recon_weight = {m: float(self.conf[f"lda_x{role(self.name, m)}"]) for m in self.modalities}
        mfn_conf = {k: self.conf[k] for k in ("hidden_dim", "mem_dim", "dropout", "window_dim")}
        self.mfn = MFN(self.input_dims, 1, mfn_conf)
        # only the MFN's recurrent part is used: its own head and output layer would get no gradient
        del self.mfn.head, self.mfn.out
        self.to_zy = nn.Linear(self.mfn.last_size, h)
        self.encoders = nn.ModuleDict({m: LSTMEncoder(d, h, p) for m, d in self.input_dims.items()})

        def factor():
            return nn.Sequential(nn.Linear(h, f), nn.ReLU(), nn.Dropout(p), nn.Linear(f, f), nn.ReLU())
        self.fy = factor()
        self.fm = nn.ModuleDict({m: factor() for m in self.modalities})
        self.decoders = nn.ModuleDict({m: Decoder(2 * f, d) for m, d in self.input_dims.items()})
        self.head = nn.Sequential(nn.Linear(f, f), nn.ReLU(), nn.Dropout(p), nn.Linear(f, f))
        self.out = nn.Linear(f, self.output_dim)

    def fuse(self, x, lengths, present):
        zy = self.to_zy(self.mfn.run(x, lengths, present))
        fy = self.fy(zy)
        div = bool(self.detail("kernel_div_dim"))
        mmd = mmd_to_normal(zy, div)
        recon = zy.new_zeros(())
        for m in self.modalities:
            zm = gate(self.encoders[m](x[m], lengths[m]), present[m])
            rows = present[m]
            if int(rows.sum()) >= 2:
                mmd = mmd + mmd_to_normal(zm[rows], div)
            x_hat = self.decoders[m](torch.cat([fy, self.fm[m](zm)], 1), x[m].size(1))
            mask = length_mask(lengths[m], x[m].size(1)) & rows.unsqueeze(1)
            recon = recon + self.recon_weight[m] * masked_mse(x_hat, x[m], mask)
        feats = self.head(fy)
        aux = float(self.conf["lda_mmd"]) * mmd + recon
        return FusionOutput(self.out(feats), aux, feats)

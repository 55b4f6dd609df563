"""MFN: Memory Fusion Network (Zadeh et al., AAAI 2018); aligned frames only (same length per utterance).

One LSTMCell per modality steps over the frames; at every step the Delta-memory attention looks at the cell
states of the previous and the current step of all modalities (``window_dim`` = 2), and a gated multi-view
memory is updated from what it attends.  Output: the last hidden states and the memory, through an MLP.
Lengths: an utterance's states and memory stop changing after its last valid frame, so padding never changes
the outputs.  Missing modality: ZEROED: its hidden and cell states are zeroed after every step, so it feeds
nothing to the memory or the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from etser.models import register

from .base import FusionModel, FusionOutput, gate


@register("fusion")
class MFN(FusionModel):
    name = "mfn"
    level = "frame"
    aligned = True
    defaults = {"hidden_dim": 128, "mem_dim": 128, "dropout": 0.3, "window_dim": 2}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        if int(self.conf.get("window_dim", 2)) != 2:
            raise ValueError(f"fusion {self.name!r}: only window_dim 2 (previous and current step) is implemented")
        h, mem, p = int(self.conf["hidden_dim"]), int(self.conf["mem_dim"]), float(self.conf["dropout"])
        self.h, self.mem_dim = h, mem
        n = len(self.modalities)
        self.cells = nn.ModuleDict({m: nn.LSTMCell(d, h) for m, d in self.input_dims.items()})
        att_dim = self.build_memory_input(h, p)
        self.att2 = nn.Sequential(nn.Linear(att_dim, h), nn.ReLU(), nn.Dropout(p), nn.Linear(h, mem))
        self.gamma1 = nn.Sequential(nn.Linear(att_dim + mem, h), nn.ReLU(), nn.Dropout(p), nn.Linear(h, mem))
        self.gamma2 = nn.Sequential(nn.Linear(att_dim + mem, h), nn.ReLU(), nn.Dropout(p), nn.Linear(h, mem))
        self.head = nn.Sequential(nn.Linear(n * h + mem, h), nn.ReLU(), nn.Dropout(p), nn.Linear(h, h // 2))
        self.out = nn.Linear(h // 2, self.output_dim)

    @property
    def last_size(self) -> int:
        """Size of :meth:`run`'s output (last hidden states and memory)."""
        return len(self.modalities) * self.h + self.mem_dim

    # MFN's Delta-memory attention; Graph-MFN replaces these two methods by its fusion graph.
    def build_memory_input(self, h: int, p: float) -> int:
        d = 2 * len(self.modalities) * h
        self.att1 = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(p), nn.Linear(h, d))
        return d

    def memory_input(self, prev_h, new_h, prev_c, new_c, present):
        c_star = torch.cat([prev_c[m] for m in self.modalities] + [new_c[m] for m in self.modalities], 1)
        return torch.softmax(self.att1(c_star), 1) * c_star

    def run(self, x, lengths, present) -> torch.Tensor:
        """Step over the frames; (B, M*h + mem): last hidden states of every modality and the memory."""
        ms = self.modalities
        ref = next(iter(x.values()))
        b, t_max = ref.size(0), ref.size(1)
        h = {m: ref.new_zeros(b, self.h) for m in ms}
        c = {m: ref.new_zeros(b, self.h) for m in ms}
        mem = ref.new_zeros(b, self.mem_dim)
        length = lengths[ms[0]]
        for t in range(t_max):
            valid = (t < length).unsqueeze(1)
            new_h, new_c = {}, {}
            for m in ms:
                hh, cc = self.cells[m](x[m][:, t], (h[m], c[m]))
                new_h[m], new_c[m] = gate(hh, present[m]), gate(cc, present[m])
            att = self.memory_input(h, new_h, c, new_c, present)
            c_hat = torch.tanh(self.att2(att))
            both = torch.cat([att, mem], 1)
            new_mem = torch.sigmoid(self.gamma1(both)) * mem + torch.sigmoid(self.gamma2(both)) * c_hat
            mem = torch.where(valid, new_mem, mem)
            for m in ms:
                h[m] = torch.where(valid, new_h[m], h[m])
                c[m] = torch.where(valid, new_c[m], c[m])
        return torch.cat([h[m] for m in ms] + [mem], 1)

    def fuse(self, x, lengths, present):
        feats = self.head(self.run(x, lengths, present))
        return FusionOutput(self.out(feats), self.zero(), feats)

"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

Each modality is projected to ``hidden_dim`` by a Conv1d (``conv1d_kernel_size`` odd, zero "same" padding, on
frames whose padding was zeroed first, so the last valid frame never sees padding).  For every target
modality, one crossmodal transformer per source modality (queries from the target, keys/values from the
source, pre-LayerNorm, ``layers`` deep); the target's crossmodal outputs are concatenated and go through a
self-attention transformer (its memory); the memory at the target's last valid frame is kept.  The
concatenation of all targets goes through a residual MLP.  Every attention masks the padded keys, so padding
never changes the outputs; aligned and unaligned inputs both work (lengths are per modality).
Missing modality: ZEROED: its projected frames are zero (keys carrying no content) and its own branch's
final vector is zeroed.

Official details (``official: true``, or each key alone): ``causal_mask`` (every attention, crossmodal and
memory, also masks the "future": query i sees keys j <= i + |T_k - T_q|, the official ``buffered_future_mask``),
``valid_conv`` (the Conv1d has no padding: T - k + 1 frames, any kernel size; lengths shrink alike) and
``deep_memory`` (the memory transformers are max(layers, 3) deep; ours: layers).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register

from .base import FusionModel, FusionOutput, gate, last_valid, length_mask


class CrossLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_pad: torch.Tensor,
                future: torch.Tensor | None = None) -> torch.Tensor:
        kvn = self.ln_kv(kv)
        a, _ = self.attn(self.ln_q(q), kvn, kvn, key_padding_mask=kv_pad, attn_mask=future, need_weights=False)
        q = q + self.drop(a)
        return q + self.drop(self.ff(self.ln_ff(q)))


@register("fusion")
class MulT(FusionModel):
    name = "mult"
    level = "frame"
    defaults = {"hidden_dim": 64, "layers": 2, "num_heads": 8, "dropout": 0.1, "conv1d_kernel_size": 1,
                "causal_mask": None, "valid_conv": None, "deep_memory": None}
    official_details = {"causal_mask": (False, True), "valid_conv": (False, True), "deep_memory": (False, True)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        heads, layers, k = int(self.conf["num_heads"]), int(self.conf["layers"]), int(self.conf["conv1d_kernel_size"])
        self.kernel, self.valid_conv = k, bool(self.detail("valid_conv"))
        self.causal = bool(self.detail("causal_mask"))
        if k < 1 or (not self.valid_conv and k % 2 != 1):
            raise ValueError(f"fusion 'mult': conv1d_kernel_size must be odd (masking needs 'same' padding), got {k}")
        if h % heads:
            raise ValueError(f"fusion 'mult': hidden_dim {h} is not a multiple of num_heads {heads}")
        ms = self.modalities
        n_src = len(ms) - 1
        conv_pad = 0 if self.valid_conv else k // 2
        self.proj = nn.ModuleDict({m: nn.Conv1d(d, h, k, padding=conv_pad, bias=False)
                                   for m, d in self.input_dims.items()})
        self.cross = nn.ModuleDict({
            f"{s}_to_{t}": nn.ModuleList([CrossLayer(h, heads, p) for _ in range(layers)])
            for t in ms for s in ms if s != t})
        self.memory = nn.ModuleDict({
            t: nn.TransformerEncoder(
                nn.TransformerEncoderLayer(n_src * h, heads, 4 * n_src * h, p, batch_first=True, norm_first=True),
                max(layers, 3) if self.detail("deep_memory") else layers, enable_nested_tensor=False)
            for t in ms})
        d_all = len(ms) * n_src * h
        self.proj1, self.proj2 = nn.Linear(d_all, d_all), nn.Linear(d_all, d_all)
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(d_all, self.output_dim)

    @staticmethod
    def future_mask(t_q: int, t_k: int, device) -> torch.Tensor:
        """(t_q, t_k) bool, True where the official code's future mask hides key j from query i."""
        return torch.ones(t_q, t_k, dtype=torch.bool, device=device).triu(1 + abs(t_k - t_q))

    def fuse(self, x, lengths, present):
        ms = self.modalities
        e, lengths = {}, dict(lengths)
        for m in ms:
            xm = x[m].masked_fill(~length_mask(lengths[m], x[m].size(1)).unsqueeze(-1), 0.0)
            if self.valid_conv:
                # without padding the conv gives T - k + 1 frames; an utterance shorter than k keeps one
                xm = F.pad(xm, (0, 0, 0, max(self.kernel - xm.size(1), 0)))
                lengths[m] = (lengths[m] - self.kernel + 1).clamp(min=1)
            e[m] = gate(self.proj[m](xm.transpose(1, 2)).transpose(1, 2), present[m])
        pad = {m: ~length_mask(lengths[m], e[m].size(1)) for m in ms}

        def future(t, s):
            return self.future_mask(e[t].size(1), e[s].size(1), e[t].device) if self.causal else None
        finals = []
        for t in ms:
            branches = []
            for s in ms:
                if s == t:
                    continue
                q = e[t]
                for layer in self.cross[f"{s}_to_{t}"]:
                    q = layer(q, e[s], pad[s], future(t, s))
                branches.append(q)
            mem = self.memory[t](torch.cat(branches, -1), mask=future(t, t), src_key_padding_mask=pad[t])
            finals.append(gate(last_valid(mem, lengths[t]), present[t]))
        z = torch.cat(finals, -1)
        feats = self.proj2(self.drop(F.relu(self.proj1(z)))) + z
        return FusionOutput(self.out(feats), self.zero(), feats)

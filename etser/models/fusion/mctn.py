"""MCTN: Multimodal Cyclic Translation Network (Pham et al., AAAI 2019); aligned frames only.

Features of every modality are zero-padded to the largest feature dim (as MERBench) so one sequence-to-sequence
model can translate both ways.  Order: text -> visual -> audio (by role; other names keep the given order).
``seq2seq1`` translates the source (text) into the second modality and, cyclically, its own translation back
into the source; its encoder states on the source are the joint representation.  With a third modality,
``seq2seq2`` translates the joint representation into it and its encoder states become the joint
representation.  A length-aware LSTM over the joint representation gives the features.
Auxiliary loss: ``loss_weight * (MSE second + MSE cycle source + MSE third)`` on valid frames and the target's
real feature dims.  Encoders are batch-first LSTMs over packed sequences (MERBench feeds batch-first tensors to
a time-first LSTM); decoders attend over valid encoder frames only.  Teacher forcing (training only): at each
step the ground-truth previous frame is fed with probability ``teacher_forcing_ratio``, else the prediction.
Missing modality: ZEROED input frames; its rows leave the translation terms it is the target of.

Official details (``official: true``, or each key alone): ``bidirectional`` (the encoders are bidirectional
LSTMs, directions summed, the decoder's initial state the sum of both final states; the decoder at each step
is a bidirectional LSTM run on that one step from a zero state, as the official code runs it, directions
summed), ``across_batch`` (the official bug: the LSTMs are time-first but fed (B, T, D), so the recurrence and
the decoder's steps run across the utterances of the batch, every frame index being a "batch row"; padding is
not masked there), ``truth_feedback`` (the official bug: the non-teacher-forcing branch also feeds the true
frame) and ``padded_mse`` (translation MSE over every frame and the zero-padded feature dims; ours: valid
frames and the target's real dims).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models import register

from .base import FusionModel, FusionOutput, LSTMEncoder, ROLES, gate, length_mask, masked_mse

_ORDER = {"l": 0, "v": 1, "a": 2}


class Seq2Seq(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float, bidirectional: bool = False,
                 truth_feedback: bool = False):
        super().__init__()
        self.hidden, self.bidirectional, self.truth_feedback = hidden, bidirectional, truth_feedback
        self.encoder = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.att_w = nn.Linear(2 * hidden, hidden)
        self.att_v = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.LSTMCell(out_dim + hidden, hidden)
        if bidirectional:
            self.cell_back = nn.LSTMCell(out_dim + hidden, hidden)
        self.proj = nn.Linear(2 * hidden, out_dim)

    def forward(self, src, lengths, trg, tf_ratio: float):
        """src (B, T, in), trg (B, T, out) -> (encoder states (B, T, H), predictions (B, T, out))."""
        packed = nn.utils.rnn.pack_padded_sequence(src, lengths.cpu(), batch_first=True, enforce_sorted=False)
        enc, (h, c) = self.encoder(packed)
        enc, _ = nn.utils.rnn.pad_packed_sequence(enc, batch_first=True, total_length=src.size(1))
        pad = ~length_mask(lengths, src.size(1))
        if self.bidirectional:
            enc = enc[..., :self.hidden] + enc[..., self.hidden:]
            h, c = h[-1] + h[-2], c[-1] + c[-2]
        else:
            h, c = h[-1], c[-1]
        prev = trg.new_zeros(trg.size(0), trg.size(2))  # start frame
        keys = self.drop(enc)
        preds = []
        for t in range(trg.size(1)):
            score = self.att_v(torch.tanh(self.att_w(torch.cat(
                [h.unsqueeze(1).expand(-1, keys.size(1), -1), keys], -1)))).squeeze(-1)
            w = torch.softmax(score.masked_fill(pad, float("-inf")), 1)
            ctx = (w.unsqueeze(-1) * keys).sum(1)
            inp = torch.cat([prev, ctx], 1)
            if self.bidirectional:
                # the official decoder: a bidirectional LSTM run on this one step from a zero state
                h = self.cell(inp)[0] + self.cell_back(inp)[0]
            else:
                h, c = self.cell(inp, (h, c))
            y = self.proj(torch.cat([h, ctx], 1))
            preds.append(y)
            teacher = self.truth_feedback or (self.training and bool(torch.rand(()) < tf_ratio))
            prev = trg[:, t] if teacher else y
        return enc, torch.stack(preds, 1)


@register("fusion")
class MCTN(FusionModel):
    name = "mctn"
    level = "frame"
    aligned = True
    max_modalities = 3
    defaults = {"hidden_dim": 128, "dropout": 0.1, "teacher_forcing_ratio": 0.5, "loss_weight": 0.5,
                "bidirectional": None, "across_batch": None, "truth_feedback": None,
                "padded_mse": None}
    official_details = {"bidirectional": (False, True), "across_batch": (False, True),
                        "truth_feedback": (False, True), "padded_mse": (False, True)}

    def __init__(self, input_dims, output_dim, conf=None):
        super().__init__(input_dims, output_dim, conf)
        h, p = int(self.conf["hidden_dim"]), float(self.conf["dropout"])
        self.order = sorted(self.modalities, key=lambda m: _ORDER.get(ROLES.get(m, ""), 3))
        self.dim = max(self.input_dims.values())
        opts = {"bidirectional": bool(self.detail("bidirectional")),
                "truth_feedback": bool(self.detail("truth_feedback"))}
        self.across_batch, self.padded_mse = bool(self.detail("across_batch")), bool(self.detail("padded_mse"))
        self.seq2seq1 = Seq2Seq(self.dim, self.dim, h, p, **opts)
        self.seq2seq2 = Seq2Seq(h, self.dim, h, p, **opts) if len(self.modalities) == 3 else None
        self.encoder = LSTMEncoder(h, h, p)
        self.out = nn.Linear(h, self.output_dim)

    def fuse(self, x, lengths, present):
        tf = float(self.conf["teacher_forcing_ratio"])
        seq = {m: F.pad(gate(x[m], present[m]), (0, self.dim - x[m].size(-1))) for m in self.modalities}
        src, mid = self.order[0], self.order[1]
        length = lengths[src]
        valid = length_mask(length, seq[src].size(1))
        join, mid_hat = self._translate(self.seq2seq1, seq[src], length, seq[mid], tf)
        _, src_hat = self._translate(self.seq2seq1, mid_hat, length, seq[src], tf)
        loss = self._mse(mid_hat, x[mid], valid & present[mid].unsqueeze(1))
        loss = loss + self._mse(src_hat, x[src], valid & present[src].unsqueeze(1))
        if self.seq2seq2 is not None:
            last = self.order[2]
            join, last_hat = self._translate(self.seq2seq2, join, length, seq[last], tf)
            loss = loss + self._mse(last_hat, x[last], valid & present[last].unsqueeze(1))
        feats = self.encoder(join, length)
        return FusionOutput(self.out(feats), float(self.conf["loss_weight"]) * loss, feats)

    def _translate(self, model, src, lengths, trg, tf):
        if not self.across_batch:
            return model(src, lengths, trg, tf)
        # the official bug: (B, T, D) read as (time, batch, D), so every frame index is one "sequence" of B
        # steps running across the utterances, unmasked
        full = torch.full((src.size(1),), src.size(0), dtype=torch.long, device=src.device)
        enc, pred = model(src.transpose(0, 1), full, trg.transpose(0, 1), tf)
        return enc.transpose(0, 1), pred.transpose(0, 1)

    def _mse(self, pred, target, mask):
        if self.padded_mse:
            return F.mse_loss(pred, F.pad(target, (0, self.dim - target.size(-1))))
        return masked_mse(pred[..., :target.size(-1)], target, mask)

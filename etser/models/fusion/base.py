"""What every fusion model shares: the forward contract, input checks, missing modalities, modality dropout.

A fusion model is built as ``cls(input_dims, output_dim, conf)`` and called as
``model(inputs, lengths=None, present=None)``:

* ``inputs[m]``: (B, D_m) for utterance-level models, (B, T_m, D_m) for frame-level ones, padded at the END;
* ``lengths[m]``: (B,) valid frames per utterance (frame level; ``None`` means every frame is valid);
* ``present[m]``: (B,) bool, False where modality ``m`` is missing for that utterance (``None``: all present).

It returns :class:`FusionOutput`: ``logits`` (B, output_dim), ``aux_loss`` (a scalar, 0 when the algorithm has
none; the trainer adds it to the task loss as MERBench does) and ``features`` (B, H), the representation before
the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn

# Conf keys every model accepts on top of its own.  ``official: true`` selects the official code's details of
# the algorithm (``official_details``); where that code equals ours (TFN, MFN, MMIM) it changes nothing, so
# that a protocol can set it on every algorithm alike.
COMMON_DEFAULTS = {"modality_dropout": 0.0, "official": False}


@dataclass
class FusionOutput:
    logits: torch.Tensor
    aux_loss: torch.Tensor
    features: torch.Tensor | None = None


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def last_valid(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, H): the frame at index length-1 of every utterance."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, seq.size(-1))
    return seq.gather(1, idx).squeeze(1)


class MLPEncoder(nn.Module):
    """MERBench's utterance encoder: dropout, then three Linear+ReLU."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LSTMEncoder(nn.Module):
    """MERBench's frame encoder (one unidirectional LSTM, last hidden state, dropout, Linear), length-aware:
    packed sequences, so the last state is the one at the last valid frame and padding never enters it."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, return_sequence: bool = False):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        seq, (h, _) = self.rnn(packed)
        last = self.out(self.drop(h[-1]))
        if not return_sequence:
            return last
        seq, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, total_length=x.size(1))
        return last, seq


class FusionModel(nn.Module):
    """Base class: subclasses set ``name``, ``level``, ``defaults``, ``min_modalities``/``max_modalities`` and
    implement :meth:`fuse` on checked inputs (``present`` already combined with modality dropout)."""

    name = ""
    level = "utterance"  # or "frame"
    aligned = False  # frame models that need every modality at the same length per utterance
    defaults: dict = {}
    # Details where the official EmotionTalk/MERBench code differs from ours: key -> (ours, official).  Each is
    # a conf key of its own (None: follow ``official``), and ``official: true`` selects every one not set.
    official_details: dict = {}
    min_modalities = 2
    max_modalities: int | None = None

    def __init__(self, input_dims: Mapping[str, int], output_dim: int, conf: Mapping | None = None):
        super().__init__()
        self.modalities = tuple(input_dims)
        n = len(self.modalities)
        if n < self.min_modalities or (self.max_modalities is not None and n > self.max_modalities):
            hi = self.max_modalities if self.max_modalities is not None else "any"
            raise ValueError(f"fusion {self.name!r} needs {self.min_modalities}..{hi} modalities, got {list(input_dims)}")
        for m, d in input_dims.items():
            if int(d) < 1:
                raise ValueError(f"fusion {self.name!r}: modality {m!r} has feature dim {d}")
        if int(output_dim) < 1:
            raise ValueError(f"fusion {self.name!r}: output_dim must be >= 1, got {output_dim}")
        allowed = {**COMMON_DEFAULTS, **self.defaults}
        conf = dict(conf or {})
        unknown = sorted(set(conf) - set(allowed))
        if unknown:
            raise ValueError(f"fusion {self.name!r}: unknown conf keys {unknown}; known: {sorted(allowed)}")
        self.conf = {**allowed, **conf}
        p = float(self.conf["modality_dropout"])
        if not 0.0 <= p < 1.0:
            raise ValueError(f"fusion {self.name!r}: modality_dropout must be in [0, 1), got {p}")
        self.input_dims = {m: int(d) for m, d in input_dims.items()}
        self.output_dim = int(output_dim)
        for key in self.official_details:
            if key not in allowed:
                raise TypeError(f"fusion {self.name!r}: official detail {key!r} is not among its defaults")

    def detail(self, key: str):
        """The value of an official detail: its conf key when set, else the official or our behaviour as
        ``official`` says."""
        ours, official = self.official_details[key]
        value = self.conf[key]
        if value is None:
            return official if self.conf.get("official") else ours
        return value

    # -- the public forward ------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, torch.Tensor], lengths: Mapping[str, torch.Tensor] | None = None,
                present: Mapping[str, torch.Tensor] | None = None) -> FusionOutput:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"fusion {self.name!r}: inputs lack modalities {missing} (has {sorted(inputs)})")
        x = {m: inputs[m] for m in self.modalities}
        ndim = 2 if self.level == "utterance" else 3
        batch = next(iter(x.values())).size(0)
        for m, t in x.items():
            if t.dim() != ndim or t.size(0) != batch or t.size(-1) != self.input_dims[m]:
                raise ValueError(f"fusion {self.name!r}: input {m!r} has shape {tuple(t.shape)}, expected "
                                 f"{'(B, D)' if ndim == 2 else '(B, T, D)'} with B={batch}, D={self.input_dims[m]}")
        lens = None
        if self.level == "frame":
            lens = {}
            for m, t in x.items():
                ln = lengths.get(m) if lengths is not None else None
                if ln is None:
                    ln = torch.full((batch,), t.size(1), dtype=torch.long, device=t.device)
                ln = ln.to(device=t.device, dtype=torch.long)
                if ln.shape != (batch,) or int(ln.min()) < 1 or int(ln.max()) > t.size(1):
                    raise ValueError(f"fusion {self.name!r}: lengths of {m!r} must be (B,) in 1..{t.size(1)}, "
                                     f"got {ln.tolist()}")
                lens[m] = ln
            if self.aligned:
                ref = lens[self.modalities[0]]
                for m in self.modalities[1:]:
                    if not torch.equal(lens[m], ref):
                        raise ValueError(f"fusion {self.name!r} needs aligned modalities (same length per "
                                         f"utterance; use feat_type frm_align): {m!r} differs from "
                                         f"{self.modalities[0]!r}")
        pres = self._present(present, batch, next(iter(x.values())).device)
        return self.fuse(x, lens, pres)

    def _present(self, present, batch: int, device) -> dict[str, torch.Tensor]:
        pres = {}
        for m in self.modalities:
            p = present.get(m) if present is not None else None
            pres[m] = (torch.ones(batch, dtype=torch.bool, device=device) if p is None
                       else p.to(device=device, dtype=torch.bool).view(batch))
        stack = torch.stack([pres[m] for m in self.modalities], 1)  # (B, M)
        if not bool(stack.any(1).all()):
            bad = torch.nonzero(~stack.any(1)).flatten().tolist()
            raise ValueError(f"fusion {self.name!r}: rows {bad} of the batch have no modality present")
        p = float(self.conf["modality_dropout"])
        if self.training and p > 0:
            keep = (torch.rand(stack.shape, device=device) >= p) & stack
            # never drop every modality of an utterance: restore one of its present ones at random
            empty = ~keep.any(1)
            if bool(empty.any()):
                score = torch.rand(stack.shape, device=device).masked_fill(~stack, -1.0)
                pick = nn.functional.one_hot(score.argmax(1), stack.size(1)).bool()
                keep = keep | (pick & empty[:, None])
            stack = keep
        return {m: stack[:, i] for i, m in enumerate(self.modalities)}

    def fuse(self, x: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor] | None,
             present: dict[str, torch.Tensor]) -> FusionOutput:
        raise NotImplementedError

    def zero(self) -> torch.Tensor:
        """A scalar 0 on the model's device, for models without an auxiliary loss."""
        return next(self.parameters()).new_zeros(())


def gate(t: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Zero the rows of ``t`` (B, ...) whose modality is absent."""
    return t * present.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)


# The seeds' three modalities under the names MERBench's per-modality conf keys and MCTN's translation order
# refer to (l = language/text, a = audio/speech, v = visual/video).
ROLES = {"text": "l", "audio": "a", "speech": "a", "visual": "v", "video": "v"}


def role(model: str, modality: str) -> str:
    try:
        return ROLES[modality]
    except KeyError:
        raise ValueError(f"fusion {model!r} weights its modalities by role; {modality!r} is none of "
                         f"{sorted(ROLES)}") from None


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the (B, T) frames where ``mask`` is True (all feature dims); 0 when none."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    n = m.sum() * pred.size(-1)
    return ((pred - target).pow(2) * m).sum() / n.clamp(min=1.0)


def modality_subsets(modalities) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, largest first, for scoring with modalities missing."""
    from itertools import combinations

    ms = tuple(modalities)
    return [s for r in range(len(ms), 0, -1) for s in combinations(ms, r)]


def present_for(subset, modalities, batch: int, device=None) -> dict[str, torch.Tensor]:
    """The ``present`` argument with the modalities of ``subset`` present for the whole batch, the others not."""
    unknown = sorted(set(subset) - set(modalities))
    if unknown or not subset:
        raise ValueError(f"subset {list(subset)} must be a non-empty subset of {list(modalities)}")
    return {m: torch.full((batch,), m in subset, dtype=torch.bool, device=device) for m in modalities}

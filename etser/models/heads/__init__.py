"""Downstream heads on frozen upstream features.

Every head maps a batch (the format of :mod:`etser.featset`) to outputs (B, output_size).  A head class
declares what it reads, and nothing outside it branches on its name:

* ``input_kind``: ``"pooled"`` (the stage-2 pooled cache: ``mean`` and ``std``, each (B, L, D), the time-mean
  and time-std of every selected layer) or ``"frames"`` (``frames`` (B, T, L, D) of the dumped
  ``frame_layers`` and ``lengths`` (B,));
* ``num_streams``: how many feature streams (modalities) it takes (the heads here take one);
* :meth:`Head.select_layers`: which upstream layers of a stream it reads, from its ``head_conf``.

Heads register by name with ``@register("head", name)`` (the ``head:`` of conf/train/<name>.yaml), each from its
own module of this package (superb, paper, attentive, fusion); this module holds what they share.

Input standardisation (``normalize: true``) uses per-layer, per-dimension statistics of the training set,
stored in buffers so that the checkpoint carries them.  For the mean statistic it is a per-frame affine map,
which also commutes with mean pooling.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn

from etser import models

# a fusion head's algorithm configs: conf/fusion/<algo>.yaml (model defaults, train lr/grad_clip, tune lists)

# Stage 2 stores the population std (divide by the number of valid frames) — see etser/extract.py.
STD_DDOF = 0

POOLED_STATS = ("mean", "std")


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_std(x: torch.Tensor, lengths: torch.Tensor, ddof: int = STD_DDOF) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-mean and time-std over valid frames of x (B, T, ...), the way stage 2 pools them."""
    mask = length_mask(lengths, x.shape[1]).to(x.dtype)
    mask = mask.reshape(mask.shape + (1,) * (x.dim() - 2))
    n = lengths.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 2))
    mean = (x * mask).sum(1) / n
    var = (((x - mean.unsqueeze(1)) * mask) ** 2).sum(1) / (n - ddof).clamp(min=1)
    return mean, var.sqrt()


def _robust_scale(center: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Spread floored at 1e-3 of the layer's typical magnitude.

    A statistic that is constant over the training set (the per-utterance-normalised fbank's std) would
    otherwise be divided by ~0 and turn float noise into large inputs.
    """
    magnitude = (center ** 2 + spread ** 2).mean(dim=-1, keepdim=True).sqrt()
    return torch.maximum(spread, 1e-3 * magnitude).clamp(min=1e-8)


class Head(nn.Module):
    """Common part: what the head reads, the output size, and training-set standardisation."""

    input_kind = "pooled"      # or "frames"
    num_streams = 1
    eval_batch_size = 256      # utterances per batch when scoring
    layer_options: tuple[str, ...] = ()   # head_conf keys used by select_layers, not by the constructor

    @classmethod
    def input_kind_for(cls, head_conf: Mapping) -> str:
        """What the head reads with this ``head_conf`` (``pooled`` or ``frames``): its ``input_kind`` here."""
        return cls.input_kind

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """Upstream layer indices (0 = the first hidden state) the head reads: all of them."""
        return list(range(num_layers))

    def __init__(self, num_layers: int, dim: int, num_classes: int, normalize: bool):
        super().__init__()
        self.stream_name: str | None = None   # set by build_head: the batch stream this head reads
        self.num_layers, self.dim, self.num_classes = num_layers, dim, num_classes
        self.normalize = normalize
        for name, value in (("mean_center", 0.0), ("mean_scale", 1.0), ("std_center", 0.0), ("std_scale", 1.0)):
            self.register_buffer(name, torch.full((num_layers, dim), value))

    @torch.no_grad()
    def fit_normalizer(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the standardisation from training-set pooled statistics, each (N, L, D) of the head's layers.

        Frames are standardised with the utterance-averaged mean and the total (within + between utterance)
        std of each dimension; the std statistic with its own mean and std over utterances.
        """
        if not self.normalize:
            return
        mean, std = mean.double(), std.double()
        center = mean.mean(0)
        total_var = (std ** 2 + mean ** 2).mean(0) - center ** 2
        self.mean_center.copy_(center)
        self.mean_scale.copy_(_robust_scale(center, total_var.clamp(min=0).sqrt()))
        std_center = std.mean(0)
        self.std_center.copy_(std_center)
        self.std_scale.copy_(_robust_scale(std_center, std.std(0, unbiased=False)))

    @torch.no_grad()
    def fit_normalizers(self, pooled: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The trainer's call for every head: ``{stream: (mean, std)}`` of the training set; one stream here."""
        ((mean, std),) = pooled.values()
        self.fit_normalizer(mean, std)

    @classmethod
    def complete_config(cls, conf: dict, overridden: set[str] = frozenset()) -> dict:
        """A training config completed with what the head's own config files add (nothing here), then made
        the ``search_draw``-th draw of its search space when that is set."""
        from etser.learn.tune import draw_config

        return draw_config(conf, cls.search_space(conf))

    @classmethod
    def search_space(cls, conf: Mapping) -> dict:
        """Random-search lists, dotted training-config key -> values: the config's ``tune`` (empty: the head
        is trained as configured, never searched)."""
        return dict(conf.get("tune") or {})

    @classmethod
    def report_fields(cls, info: Mapping) -> dict:
        """What the results tables show of this head beyond the common fields (none here)."""
        return {}

    def modality_subsets(self) -> list[tuple[str, ...]]:
        """Subsets of its streams the head is also scored on (with the others marked missing): none here."""
        return []

    def outputs(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training step's call: outputs and the model's auxiliary loss (None: no auxiliary loss)."""
        return self(batch), None

    def forward(self, batch: Mapping) -> torch.Tensor:
        """Outputs (B, output_size) of a batch in the etser.featset format."""
        streams = batch["streams"]
        name = self.stream_name if self.stream_name in streams else None
        if name is None:
            if len(streams) != 1:
                raise ValueError(f"{type(self).__name__} reads one stream ({self.stream_name}); the batch has "
                                 f"{', '.join(streams)}")
            name = next(iter(streams))
        return self.forward_stream(streams[name])

    def forward_stream(self, stream: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward_stream or forward")

    def norm_mean(self, mean: torch.Tensor) -> torch.Tensor:
        return (mean - self.mean_center) / self.mean_scale

    def norm_std(self, std: torch.Tensor) -> torch.Tensor:
        return (std - self.std_center) / self.std_scale


def _check_stats(stats: Sequence[str]) -> None:
    bad = [s for s in stats if s not in POOLED_STATS]
    if not stats or bad:
        raise ValueError(f"stats must be a non-empty subset of {list(POOLED_STATS)}, got {list(stats)}")


def head_class(name: str) -> type[Head]:
    return models.get("head", name)


def input_kind(head_name: str, head_conf: Mapping) -> str:
    """What the head reads (``pooled`` or ``frames``); a fusion head's depends on its algorithm."""
    cls = head_class(head_name)
    return cls.input_kind_for(head_conf)


def select_layers(head_name: str, head_conf: Mapping, num_layers: int,
                  frame_layers: Sequence[int] | None = None) -> list[int]:
    """Upstream layer indices the head ``head_name`` reads (its class's :meth:`Head.select_layers`)."""
    return head_class(head_name).select_layers(head_conf, num_layers, frame_layers)


def build_head(head_name: str, head_conf: Mapping, streams: Sequence[Mapping], output_size: int) -> Head:
    """Build a head for ``streams`` (dicts with ``name``, ``layers`` (the selected ones) and ``dim``)."""
    cls = head_class(head_name)
    if cls.num_streams is None:
        if len(streams) < 2:
            raise ValueError(f"head {head_name} fuses 2 or more streams, got {len(streams)}: "
                             + ", ".join(str(s["name"]) for s in streams))
        conf = {k: v for k, v in dict(head_conf).items() if k not in cls.layer_options}
        try:
            return cls(streams, output_size, **conf)
        except TypeError as e:
            raise ValueError(f"bad head_conf for {head_name}: {e}") from None
    if len(streams) != cls.num_streams:
        raise ValueError(f"head {head_name} reads {cls.num_streams} stream(s), got {len(streams)}: "
                         + ", ".join(str(s["name"]) for s in streams))
    conf = {k: v for k, v in dict(head_conf).items() if k not in cls.layer_options}
    (stream,) = streams
    try:
        model = cls(len(stream["layers"]), int(stream["dim"]), output_size, **conf)
    except TypeError as e:
        raise ValueError(f"bad head_conf for {head_name}: {e}") from None
    model.stream_name = str(stream["name"])
    return model

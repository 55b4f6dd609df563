"""Downstream heads on frozen upstream features.

Every head maps a batch (the format of :mod:`etser.featset`) to outputs (B, output_size).  A head class
declares what it reads, and nothing outside it branches on its name:

* ``input_kind``: ``"pooled"`` (the stage-2 pooled cache: ``mean`` and ``std``, each (B, L, D), the time-mean
  and time-std of every selected layer) or ``"frames"`` (``frames`` (B, T, L, D) of the dumped
  ``frame_layers`` and ``lengths`` (B,));
* ``num_streams``: how many feature streams (modalities) it takes (the heads here take one);
* :meth:`Head.select_layers`: which upstream layers of a stream it reads, from its ``head_conf``.

Heads register by name with ``@register("head", name)`` (the ``head:`` of conf/train/<name>.yaml).

``superb`` is S3PRL's emotion-recognition head: softmax-weighted sum of all layers, Linear(D, 256), mean pooling
over time, Linear(256, C).  Mean pooling commutes with the per-frame affine maps before it, so computing it from
the per-layer time-means is exact, not an approximation; :meth:`SuperbHead.forward_frames` is the frame-level
path that proves it (tests/test_heads.py).  With ``stats: [mean, std]`` the per-layer time-std goes through its
own softmax layer weights and Linear(D, 256) and is added before the classifier (statistics pooling): S3PRL's
``fbank`` normalises every utterance to zero time-mean, so a mean-only head sees the same input for every
utterance.  The frame-level path computes the same std from frames, so it stays exactly equivalent.

Input standardisation (``normalize: true``) uses per-layer, per-dimension statistics of the training set,
stored in buffers so that the checkpoint carries them.  For the mean statistic it is a per-frame affine map,
which also commutes with mean pooling.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser import models
from etser.models import register

# a fusion head's algorithm configs: conf/fusion/<algo>.yaml (model defaults, train lr/grad_clip, tune lists)
DEFAULT_FUSION_CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "fusion"

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
    def complete_config(cls, conf: dict, overridden: set[str] = frozenset(), trial: int = 0) -> dict:
        """A training config completed with what the head's own config files add (nothing here); ``trial``
        k > 0: the k-th draw of a random search, for heads that have one."""
        if trial:
            raise ValueError(f"head {conf['head']}: no random search (fusion_trials) for this head")
        return conf

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


@register("head", "superb")
class SuperbHead(Head):
    """S3PRL's ER head (weighted layer sum -> Linear(D, proj_dim) -> mean pool -> Linear(C)), + optional std."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, proj_dim: int = 256,
                 stats: Sequence[str] = ("mean",), normalize: bool = False):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        # zeros: uniform softmax weights at the start, as S3PRL's Featurizer.
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.proj = nn.Linear(dim, proj_dim) if "mean" in self.stats else None
        if "std" in self.stats:
            self.std_layer_logits = nn.Parameter(torch.zeros(num_layers))
            self.std_proj = nn.Linear(dim, proj_dim)
        self.out = nn.Linear(proj_dim, num_classes)

    def layer_weights(self) -> torch.Tensor:
        return F.softmax(self.layer_logits, dim=0)

    def _std_term(self, std: torch.Tensor) -> torch.Tensor:
        w = F.softmax(self.std_layer_logits, dim=0)
        return self.std_proj(torch.einsum("l,bld->bd", w, self.norm_std(std)))

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled path: batch['mean'], batch['std'] (B, L, D)."""
        hidden = 0
        if self.proj is not None:
            hidden = self.proj(torch.einsum("l,bld->bd", self.layer_weights(), self.norm_mean(batch["mean"])))
        if "std" in self.stats:
            hidden = hidden + self._std_term(batch["std"])
        return self.out(hidden)

    def forward_frames(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frame-level path, S3PRL's order of operations: frames (B, T, L, D) of all layers, lengths (B,)."""
        hidden = 0
        if self.proj is not None:
            x = torch.einsum("l,btld->btd", self.layer_weights(), self.norm_mean(frames))
            projected = self.proj(x)                                   # (B, T, proj_dim)
            mask = length_mask(lengths, frames.shape[1]).to(projected.dtype)[..., None]
            hidden = (projected * mask).sum(1) / lengths.to(projected.dtype)[:, None]
        if "std" in self.stats:
            _, std = masked_mean_std(frames, lengths)
            hidden = hidden + self._std_term(std)
        return self.out(hidden)


@register("head", "paper")
class PaperHead(Head):
    """The official EmotionTalk setup: fixed unweighted sum of the last layers' time-means, then an MLP."""

    layer_options = ("last_layers",)

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """The last ``last_layers`` (4, or all when the upstream has fewer)."""
        k = int(head_conf.get("last_layers", 4))
        return list(range(max(0, num_layers - k), num_layers))

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden_dims: Sequence[int] = (256, 128, 64),
                 dropout: float = 0.3, stats: Sequence[str] = ("mean",), normalize: bool = False):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        layers: list[nn.Module] = []
        width = dim * len(self.stats)
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if "mean" in self.stats:
            parts.append(self.norm_mean(batch["mean"]).sum(1))
        if "std" in self.stats:
            parts.append(self.norm_std(batch["std"]).sum(1))
        return self.mlp(torch.cat(parts, dim=-1))


@register("head", "attentive")
class AttentiveHead(Head):
    """Frame-level: weighted layer sum -> Linear+ReLU -> attentive (statistics) pooling -> MLP.

    Padded frames are zeroed and get -inf attention logits before the softmax, so their weight is exactly 0
    (S3PRL's SelfAttentionPooling adds a 0/-1e5 mask, which leaks weight onto padding for short utterances
    in long batches and lets padded values through).
    """

    input_kind = "frames"
    eval_batch_size = 32       # padded frame batches grow with the longest utterance

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        """The dumped frame layers."""
        if not frame_layers:
            raise ValueError("attentive head needs frame-level features: the feature dump has no frames.scp; "
                             "set frame_layers in the upstream config and rerun stage 2")
        return list(frame_layers)

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden_dim: int = 256, attn_dim: int = 128,
                 dropout: float = 0.1, stats: Sequence[str] = ("mean", "std"), normalize: bool = True):
        super().__init__(num_layers, dim, num_classes, normalize)
        _check_stats(stats)
        self.stats = tuple(stats)
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.pre = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))
        self.post = nn.Sequential(nn.Linear(hidden_dim * len(self.stats), hidden_dim), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))

    def attention_weights(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (B, T, H), attention weights (B, T)); weights are 0 on padding and sum to 1."""
        if bool((lengths < 1).any()):
            raise ValueError("attentive head: an utterance has no frames")
        mask = length_mask(lengths, frames.shape[1])
        frames = frames.masked_fill(~mask[:, :, None, None], 0.0)
        x = torch.einsum("l,btld->btd", F.softmax(self.layer_logits, dim=0), self.norm_mean(frames))
        hidden = self.pre(x) * mask[..., None].to(x.dtype)
        logits = self.attention(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))
        return hidden, F.softmax(logits, dim=1)

    def forward_stream(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden, w = self.attention_weights(batch["frames"], batch["lengths"])
        mean = torch.einsum("bt,bth->bh", w, hidden)
        parts = [mean] if "mean" in self.stats else []
        if "std" in self.stats:
            var = torch.einsum("bt,bth->bh", w, hidden ** 2) - mean ** 2
            parts.append(var.clamp(min=1e-8).sqrt())
        return self.post(torch.cat(parts, dim=-1))


@register("head", "fusion")
class FusionHead(nn.Module):
    """A fusion model of :mod:`etser.models.fusion` over several streams (one per modality).

    ``head_conf``: ``algo`` (a fusion algorithm registered in :mod:`etser.models.fusion`), ``fusion_conf`` (the model's conf),
    ``last_layers`` (layers of each stream read: the last k, 0 = all) and, for frame-level models,
    ``feat_type`` (``frm_align`` or ``frm_unalign``; aligned models need ``frm_align``).

    Per-modality inputs: the FIXED average of the selected layers (no learned layer weights: the official
    code averages layers too), standardised per stream with that stream's own training-set statistics
    (buffers, so the checkpoint carries them).  Utterance-level models read the pooled time-means (MERBench's
    ``utt`` = time mean); frame-level ones read the frames, brought to a common length per utterance by
    :func:`etser.models.fusion.align.prepare` (MERBench's compression by 6 / 12 and alignment to the text length)
    and batched with their lengths.  ``present`` (missing in a stream, see etser.featset) is passed on;
    ``keep_modalities`` (None: all) marks the others absent, for scoring with modalities missing.
    ``aux_loss`` holds the model's extra loss of the last forward (the trainer adds it to the task loss).
    """

    input_kind = "by algorithm"  # pooled (utterance-level algorithms) or frames: see input_kind_for
    num_streams = None          # two or more
    eval_batch_size = 64
    layer_options = ("last_layers",)

    @classmethod
    def input_kind_for(cls, head_conf: Mapping) -> str:
        from etser.models.fusion import fusion_class

        return "pooled" if fusion_class(str(head_conf.get("algo", "attention"))).level == "utterance" else "frames"

    @classmethod
    def select_layers(cls, head_conf: Mapping, num_layers: int, frame_layers: Sequence[int] | None) -> list[int]:
        k = int(head_conf.get("last_layers", 4))
        layers = list(range(max(0, num_layers - k), num_layers)) if k > 0 else list(range(num_layers))
        if cls.input_kind_for(head_conf) == "frames":
            if not frame_layers:
                raise ValueError("frame-level fusion needs frames: the feature dump has no frames.scp; set "
                                 "frames.layers in the upstream config and rerun stage 2")
            layers = [x for x in layers if x in frame_layers] or list(frame_layers)[-max(k, 1):]
        return layers

    def __init__(self, streams: Sequence[Mapping], output_size: int, algo: str = "attention",
                 fusion_conf: Mapping | None = None, feat_type: str = "frm_align"):
        super().__init__()
        from etser.models.fusion import build_fusion, fusion_class

        self.algo, self.feat_type = str(algo), str(feat_type)
        cls = fusion_class(self.algo)
        self.input_kind = "pooled" if cls.level == "utterance" else "frames"
        if self.input_kind == "frames" and (feat_type not in ("frm_align", "frm_unalign")
                                            or (cls.aligned and feat_type != "frm_align")):
            raise ValueError(f"fusion {algo}: feat_type must be frm_align{'' if cls.aligned else ' or frm_unalign'}, "
                             f"got {feat_type!r}")
        self.stream_names = [str(st["name"]) for st in streams]
        if self.input_kind == "frames" and "text" not in self.stream_names:
            raise ValueError(f"frame-level fusion aligns the modalities to the text: it needs a stream named text "
                             f"(have {', '.join(self.stream_names)})")
        dims = {str(st["name"]): int(st["dim"]) for st in streams}
        self.model = build_fusion(self.algo, dims, output_size, dict(fusion_conf or {}))
        for name, d in dims.items():
            self.register_buffer(f"center_{name}", torch.zeros(d))
            self.register_buffer(f"scale_{name}", torch.ones(d))
        self.keep_modalities: set[str] | None = None
        self.aux_loss = torch.zeros(())

    @torch.no_grad()
    def fit_normalizers(self, pooled: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per stream, from its training-set pooled (mean, std), each (N, L, D) of the selected layers:
        utterance level, the mean and std over utterances of the layer-averaged time-mean; frame level, the
        mean and total (within + between utterance) std of the layer-averaged frames (within-utterance
        variance approximated by the layers' mean variance)."""
        for name, (mean, std) in pooled.items():
            m = mean.double().mean(1)                       # (N, D)
            center = m.mean(0)
            if self.input_kind == "pooled":
                spread = m.std(0, unbiased=False)
            else:
                within = (std.double() ** 2).mean(1).mean(0)
                spread = (within + m.var(0, unbiased=False)).sqrt()
            getattr(self, f"center_{name}").copy_(center)
            getattr(self, f"scale_{name}").copy_(_robust_scale(center[None], spread[None])[0])

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"center_{name}")) / getattr(self, f"scale_{name}")

    def inputs(self, batch: Mapping) -> tuple[dict, dict | None, dict]:
        """(inputs, lengths, present) of the fusion model from a featset batch."""
        streams = batch["streams"]
        missing = [n for n in self.stream_names if n not in streams]
        if missing:
            raise ValueError(f"fusion head reads streams {', '.join(self.stream_names)}; the batch lacks "
                             f"{', '.join(missing)}")
        present = {n: streams[n]["present"].bool() for n in self.stream_names}
        if self.keep_modalities is not None:
            present = {n: p & (n in self.keep_modalities) for n, p in present.items()}
        if self.input_kind == "pooled":
            return {n: self._norm(n, streams[n]["mean"].mean(1)) for n in self.stream_names}, None, present
        from etser.models.fusion.align import pad_batch, prepare

        device = streams[self.stream_names[0]]["frames"].device
        per_utt = []
        for i in range(len(present[self.stream_names[0]])):
            feats = {}
            for n in self.stream_names:
                f = streams[n]["frames"][i, :int(streams[n]["lengths"][i])].mean(1)   # (T, D) layer average
                feats[n] = self._norm(n, f.float()).cpu().numpy()
            per_utt.append(prepare(feats, self.feat_type))
        inputs, lengths = {}, {}
        for n in self.stream_names:
            x, lens = pad_batch([u[n] for u in per_utt])
            inputs[n], lengths[n] = x.to(device), lens.to(device)
        return inputs, lengths, present

    def forward(self, batch: Mapping) -> torch.Tensor:
        inputs, lengths, present = self.inputs(batch)
        out = self.model(inputs, lengths, present)
        self.aux_loss = out.aux_loss
        return out.logits

    def outputs(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        return logits, self.aux_loss   # added to the task loss as is (MERBench)

    def modality_subsets(self) -> list[tuple[str, ...]]:
        from etser.models.fusion import modality_subsets

        return list(modality_subsets(self.stream_names))

    @classmethod
    def complete_config(cls, conf: dict, overridden: set[str] = frozenset(), trial: int = 0) -> dict:
        """A fusion head's config completed from conf/fusion/<algo>.yaml: its ``model`` section under
        ``head_conf.fusion_conf`` and its ``train`` section (``lr``, ``grad_clip``) unless given with --conf;
        ``trial`` k > 0: the k-th random draw of its ``tune`` lists (seed ``fusion_search_seed``) on top."""
        from etser.learn.tune import apply_trial, draw_trials, load_search_space

        conf = copy.deepcopy(conf)
        algo = str(conf["head_conf"].get("algo", "attention"))
        path = Path(conf.get("fusion_conf_dir") or DEFAULT_FUSION_CONF_DIR) / f"{algo}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: fusion algorithm {algo!r} has no config")
        space = load_search_space(path)
        model_conf, train_conf = dict(space["model"]), dict(space["train"])
        if trial > 0:
            drawn = draw_trials(space["tune"], trial, int(conf["fusion_search_seed"]))[trial - 1]
            model_conf, train_conf = apply_trial(space, drawn)
        user = dict(conf["head_conf"].get("fusion_conf") or {})
        # a trial's drawn values win over the config's (keys not tuned, e.g. modality_dropout, stay as given)
        model_conf.update({k: v for k, v in user.items() if trial == 0 or k not in space["tune"]})
        conf["head_conf"] = {**conf["head_conf"], "algo": algo, "fusion_conf": model_conf}
        if trial > 0 or "optim_conf.lr" not in overridden:
            conf["optim_conf"] = {**conf["optim_conf"], "lr": float(train_conf["lr"])}
        if trial > 0 or "grad_clip" not in overridden:
            conf["grad_clip"] = float(train_conf["grad_clip"])
            conf["grad_clip_mode"] = "value"
        return conf

    @classmethod
    def report_fields(cls, info: Mapping) -> dict:
        """Algorithm, fusion level and each stream's upstream (RESULTS.md's fusion table)."""
        from etser.models.fusion import fusion_class

        algo = str(info["head_conf"].get("algo"))
        return {"algo": algo, "fusion_level": fusion_class(algo).level,
                "stream_upstreams": {st["name"]: st.get("upstream", st.get("tag")) for st in info["streams"]},
                "stream_modalities": {st["name"]: st.get("modality", st["name"]) for st in info["streams"]}}


HEADS: dict[str, type] = models.family("head")   # filled by the @register lines above


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

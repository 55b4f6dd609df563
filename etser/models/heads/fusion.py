"""The fusion head: a fusion algorithm of :mod:`etser.models.fusion` over several streams (``head: fusion``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from etser.models import register
from etser.models.heads import _robust_scale

DEFAULT_FUSION_CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "fusion"


@register("head", "fusion")
class FusionHead(nn.Module):
    """A fusion model of :mod:`etser.models.fusion` over several streams (one per modality).

    ``head_conf``: ``algo`` (a fusion algorithm registered in :mod:`etser.models.fusion`), ``fusion_conf`` (the model's conf),
    ``last_layers`` (layers of each stream read: the last k, 0 = all) and, for frame-level models,
    ``feat_type`` (``frm_align`` or ``frm_unalign``; aligned models need ``frm_align``).

    Per-modality inputs: the FIXED average of the selected layers (no learned layer weights: the official
    code averages layers too), standardised per stream with that stream's own training-set statistics
    (buffers, so the checkpoint carries them) unless ``normalize: false`` (the official code feeds the features
    raw).  Utterance-level models read the pooled time-means (MERBench's
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
                 fusion_conf: Mapping | None = None, feat_type: str = "frm_align", normalize: bool = True):
        super().__init__()
        if not isinstance(normalize, bool):
            raise ValueError(f"fusion head: normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
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
        variance approximated by the layers' mean variance).  ``normalize: false``: the identity (raw features)."""
        if not self.normalize:
            return
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
    def _algo_conf(cls, conf: Mapping) -> tuple[str, dict]:
        from etser.learn.tune import load_search_space

        algo = str(conf["head_conf"].get("algo", "attention"))
        path = Path(conf.get("fusion_conf_dir") or DEFAULT_FUSION_CONF_DIR) / f"{algo}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: fusion algorithm {algo!r} has no config")
        return algo, load_search_space(path)

    @classmethod
    def complete_config(cls, conf: dict, overridden: set[str] = frozenset()) -> dict:
        """A fusion head's config completed from conf/fusion/<algo>.yaml: its ``model`` section under
        ``head_conf.fusion_conf`` and its ``train`` section (``lr``, ``grad_clip``) unless given with --conf;
        then draw ``search_draw`` of its search space (:meth:`search_space`) when that is set: the drawn
        values win over the config's (keys not tuned, e.g. modality_dropout, stay as given)."""
        from etser.learn.tune import draw_config

        conf = copy.deepcopy(conf)
        algo, space = cls._algo_conf(conf)
        model_conf, train_conf = dict(space["model"]), dict(space["train"])
        model_conf.update(conf["head_conf"].get("fusion_conf") or {})
        conf["head_conf"] = {**conf["head_conf"], "algo": algo, "fusion_conf": model_conf}
        if "optim_conf.lr" not in overridden:
            conf["optim_conf"] = {**conf["optim_conf"], "lr": float(train_conf["lr"])}
        if "grad_clip" not in overridden or conf.get("search_draw"):
            conf["grad_clip"] = float(train_conf["grad_clip"])
            conf["grad_clip_mode"] = "value"
        return draw_config(conf, cls.search_space(conf))

    @classmethod
    def search_space(cls, conf: Mapping) -> dict:
        """The ``tune`` lists of conf/fusion/<algo>.yaml at their training-config keys (model keys under
        ``head_conf.fusion_conf``, ``lr`` as ``optim_conf.lr``, ``grad_clip``), in that file's order (so a
        seed draws what it always drew), then the training config's own ``tune``."""
        _, space = cls._algo_conf(conf)
        where = {"lr": "optim_conf.lr", "grad_clip": "grad_clip"}
        out = {(f"head_conf.fusion_conf.{k}" if k in space["model"] else where[k]): list(v)
               for k, v in space["tune"].items()}
        return {**out, **dict(conf.get("tune") or {})}

    @classmethod
    def report_fields(cls, info: Mapping) -> dict:
        """Algorithm, fusion level and each stream's upstream (RESULTS.md's fusion table)."""
        from etser.models.fusion import fusion_class

        algo = str(info["head_conf"].get("algo"))
        return {"algo": algo, "fusion_level": fusion_class(algo).level,
                "stream_upstreams": {st["name"]: st.get("upstream", st.get("tag")) for st in info["streams"]},
                "stream_modalities": {st["name"]: st.get("modality", st["name"]) for st in info["streams"]}}

"""Multimodal fusion models behind one constructor and one forward (see :mod:`etser.models.fusion.base`).

Each algorithm is one module of this package that registers its class with ``@register("fusion")`` (the name
is the file's); importing the package imports them all, so ``FUSION_MODELS`` (name -> class) lists every
module here and nothing else names them.  ``build_fusion(name, input_dims, output_dim, conf)`` builds one.
Utterance level: attention, tfn, lmf, misa, mmim.  Frame level: mult, mfn, graph_mfn, mfm, mctn.
``modality_subsets`` and ``present_for`` build the ``present`` masks for scoring with modalities missing.
Frame alignment utilities (MERBench's feature compression and text alignment) are in :mod:`etser.models.fusion.align`.
"""

from __future__ import annotations

from typing import Mapping

from etser import models

from .base import FusionModel, FusionOutput, modality_subsets, present_for

FUSION_MODELS: dict[str, type[FusionModel]] = models.discover("fusion")


def fusion_class(name: str) -> type[FusionModel]:
    return models.get("fusion", name)


def build_fusion(name: str, input_dims: Mapping[str, int], output_dim: int,
                 conf: Mapping | None = None) -> FusionModel:
    """The model ``name`` for modalities ``input_dims`` (modality -> feature dim) and ``output_dim`` outputs
    (classes, or 1 for a continuous value); ``conf`` overrides the model's defaults (unknown keys fail)."""
    return fusion_class(name)(input_dims, output_dim, conf)


__all__ = ["FUSION_MODELS", "FusionModel", "FusionOutput", "build_fusion", "fusion_class", "modality_subsets",
           "present_for"]

"""Multimodal fusion models behind one constructor and one forward (see :mod:`etser.fusion.base`).

``build_fusion(name, input_dims, output_dim, conf)`` builds one by name; ``FUSION_MODELS`` lists them.
Utterance level: attention, tfn, lmf, misa, mmim.  Frame level: mult, mfn, graph_mfn, mfm, mctn.
``modality_subsets`` and ``present_for`` build the ``present`` masks for scoring with modalities missing.
Frame alignment utilities (MERBench's feature compression and text alignment) are in :mod:`etser.fusion.align`.
"""

from __future__ import annotations

from typing import Mapping

from .attention import Attention
from .base import FusionModel, FusionOutput, modality_subsets, present_for
from .graph_mfn import GraphMFN
from .lmf import LMF
from .mctn import MCTN
from .mfm import MFM
from .mfn import MFN
from .misa import MISA
from .mmim import MMIM
from .mult import MulT
from .tfn import TFN

FUSION_MODELS: dict[str, type[FusionModel]] = {
    cls.name: cls for cls in (Attention, TFN, LMF, MISA, MMIM, MulT, MFN, GraphMFN, MFM, MCTN)}


def fusion_class(name: str) -> type[FusionModel]:
    try:
        return FUSION_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown fusion model {name!r}; known: {sorted(FUSION_MODELS)}") from None


def build_fusion(name: str, input_dims: Mapping[str, int], output_dim: int,
                 conf: Mapping | None = None) -> FusionModel:
    """The model ``name`` for modalities ``input_dims`` (modality -> feature dim) and ``output_dim`` outputs
    (classes, or 1 for a continuous value); ``conf`` overrides the model's defaults (unknown keys fail)."""
    return fusion_class(name)(input_dims, output_dim, conf)


__all__ = ["FUSION_MODELS", "FusionModel", "FusionOutput", "build_fusion", "fusion_class", "modality_subsets",
           "present_for"]

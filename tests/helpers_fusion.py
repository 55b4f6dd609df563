"""Small fusion models and inputs shared by the tests/test_fusion_*.py files."""

from __future__ import annotations

import torch

from etser.models.fusion import FUSION_MODELS, build_fusion

# Small enough for CPU tests, every structural option still exercised.
SMALL = {
    "attention": {"hidden_dim": 16},
    "tfn": {"hidden_dim": 8},
    "lmf": {"hidden_dim": 16, "rank": 3},
    "misa": {"hidden_dim": 16},
    "mmim": {"hidden_dim": 16, "cpc_layers": 2},
    "mult": {"hidden_dim": 16, "num_heads": 2, "layers": 2, "conv1d_kernel_size": 3},
    "mfn": {"hidden_dim": 16, "mem_dim": 8},
    "graph_mfn": {"hidden_dim": 16, "mem_dim": 8},
    "mfm": {"hidden_dim": 16, "mem_dim": 8},
    "mctn": {"hidden_dim": 16},
}
assert set(SMALL) <= set(FUSION_MODELS)   # an algorithm not listed here runs with its own defaults

DIMS3 = {"speech": 6, "text": 5, "visual": 4}
DIMS2 = {"speech": 6, "text": 5}
NAMES = sorted(FUSION_MODELS)
FRAME = [n for n in NAMES if FUSION_MODELS[n].level == "frame"]
UTT = [n for n in NAMES if FUSION_MODELS[n].level == "utterance"]


def small(name: str, dims=DIMS3, output_dim: int = 3, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_fusion(name, dims, output_dim, {**SMALL.get(name, {}), **extra})


def inputs(model, batch: int = 4, t_max: int = 5, seed: int = 1, lengths=(5, 3, 2, 1)):
    """Random inputs for ``model``: (B, D) or (B, T, D) with the given lengths (aligned for aligned models)."""
    g = torch.Generator().manual_seed(seed)
    if model.level == "utterance":
        return {m: torch.randn(batch, d, generator=g) for m, d in model.input_dims.items()}, None
    x, lens = {}, {}
    for i, (m, d) in enumerate(model.input_dims.items()):
        ln = torch.tensor(lengths[:batch])
        if not model.aligned and i == 1:  # unaligned models get a different length per modality
            ln = (ln + 1).clamp(max=t_max)
        x[m] = torch.randn(batch, t_max, d, generator=g)
        lens[m] = ln
    return x, lens

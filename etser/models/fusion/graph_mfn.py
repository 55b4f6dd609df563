"""Graph-MFN: MFN with the Dynamic Fusion Graph (Zadeh et al., ACL 2018, CMU-MOSEI).

As MFN, but what the memory attends at each step comes from a fusion graph: the unimodal vertices are
ReLU(Linear([h_prev, h_new])) per modality; every subset of >= 2 modalities is a vertex computed from all its
proper sub-vertices, each scaled by an efficacy in (0, 1) predicted (sigmoid) from the unimodal vertices; the
top vertex tau combines every vertex the same way.  The vertex networks live in an nn.ModuleDict, so they are
trained and saved (MERBench keeps them in a plain dict: never optimised, absent from the state_dict).
Missing modality: ZEROED states (as MFN) and a zero unimodal vertex.

Official details (``official: true``, or each key alone): ``frozen_vertices`` (the official bug: the
multimodal vertex networks keep their random initial weights, never trained; here they stay in the state_dict,
so a checkpoint still reloads the same model) and ``linear_graph`` (vertices, tau and the efficacy network
purely linear, efficacies unbounded; ours: ReLU vertices and tau, sigmoid efficacies).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn as nn

from etser.models import register

from .base import gate
from .mfn import MFN


def _proper_subsets(key: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [s for r in range(1, len(key)) for s in combinations(key, r)]


class DynamicFusionGraph(nn.Module):
    def __init__(self, n: int, dim: int, linear: bool = False, frozen_vertices: bool = False):
        super().__init__()
        self.n = n
        self.vertices = [s for r in range(2, n + 1) for s in combinations(range(n), r)]

        def act():
            return nn.Identity() if linear else nn.ReLU()
        self.nets = nn.ModuleDict({
            self.name(k): nn.Sequential(nn.Linear(len(_proper_subsets(k)) * dim, dim), act())
            for k in self.vertices})
        if frozen_vertices:
            self.nets.requires_grad_(False)
        all_vertices = [s for r in range(1, n + 1) for s in combinations(range(n), r)]
        self.tau = nn.Sequential(nn.Linear(len(all_vertices) * dim, dim), act())
        n_eff = sum(len(_proper_subsets(k)) for k in self.vertices) + len(all_vertices)
        self.efficacy = nn.Sequential(nn.Linear(n * dim, dim), act(), nn.Linear(dim, n_eff),
                                      nn.Identity() if linear else nn.Sigmoid())

    @staticmethod
    def name(key: tuple[int, ...]) -> str:
        return "_".join(map(str, key))

    def forward(self, singles: list[torch.Tensor]) -> torch.Tensor:
        eff = self.efficacy(torch.cat(singles, 1))
        out = {(i,): s for i, s in enumerate(singles)}
        j = 0
        for k in self.vertices:
            subs = _proper_subsets(k)
            inp = torch.cat([out[s] * eff[:, j + i:j + i + 1] for i, s in enumerate(subs)], 1)
            out[k] = self.nets[self.name(k)](inp)
            j += len(subs)
        keys = list(out)
        return self.tau(torch.cat([out[s] * eff[:, j + i:j + i + 1] for i, s in enumerate(keys)], 1))


@register("fusion")
class GraphMFN(MFN):
    name = "graph_mfn"
    defaults = {"hidden_dim": 128, "mem_dim": 128, "dropout": 0.3,
                "frozen_vertices": None, "linear_graph": None}
    official_details = {"frozen_vertices": (False, True), "linear_graph": (False, True)}

    def build_memory_input(self, h: int, p: float) -> int:
        self.singleton = nn.ModuleDict({m: nn.Linear(2 * h, h) for m in self.modalities})
        self.graph = DynamicFusionGraph(len(self.modalities), h, linear=bool(self.detail("linear_graph")),
                                        frozen_vertices=bool(self.detail("frozen_vertices")))
        return h

    def memory_input(self, prev_h, new_h, prev_c, new_c, present):
        singles = [gate(torch.relu(self.singleton[m](torch.cat([prev_h[m], new_h[m]], 1))), present[m])
                   for m in self.modalities]
        return self.graph(singles)

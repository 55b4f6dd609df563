"""MERBench's random hyper-parameter search (toolkit/model-tune.yaml) and its selection rule.

A search space is a mapping ``key -> list of values``; one trial takes ONE uniformly random value from every
list (MERBench draws one per run with ``random.randint``; here the draws come from ``random.Random(seed)``, in
the order of the keys, so a seed gives the same N trials every time, and N+1 trials extend N).  A fusion config
file (``conf/fusion/<name>.yaml``) holds ``model:`` (the model's defaults), ``train:`` (lr, grad_clip) and
``tune:`` (the lists); the fusion head maps them to training-config keys.

A training config (conf/train/<head>.yaml) is searched through its head's space (``Head.search_space``: dotted
config keys such as ``optim_conf.lr`` -> list): ``search_draw: k`` (k > 0) and ``search_seed: S`` make it the
k-th draw of seed S (:func:`draw_config`), so one draw is one ordinary training (one stage-3 job line; the
search itself is planned by etser.launch.plan and selected by etser.learn.search).

Selection: the trial with the best VALIDATION metric wins; test figures are never looked at (ties go to the
earlier trial).  MERBench also picks the best epoch of each run on validation; that is the trainer's job.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

from etser.yamlfile import read_yaml

SECTIONS = ("model", "train", "tune")


def load_search_space(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a ``conf/fusion/<name>.yaml``; checks that every tuned key has a default in model: or train:."""
    path = Path(path)
    doc = read_yaml(path) or {}
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected {list(SECTIONS)}")
    out = {s: dict(doc.get(s) or {}) for s in SECTIONS}
    for key, values in out["tune"].items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: tune.{key} must be a non-empty list, got {values!r}")
        if key not in out["model"] and key not in out["train"]:
            raise ValueError(f"{path}: tune.{key} has no default under model: or train:")
    return out


def draw_trials(space: Mapping[str, Sequence[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` trials, each one random value per list of ``space``; deterministic for ``seed``."""
    if int(n) < 1:
        raise ValueError(f"number of trials must be >= 1, got {n}")
    for key, values in space.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"search space {key!r} must be a non-empty list, got {values!r}")
    rng = random.Random(int(seed))
    return [{key: copy.deepcopy(values[rng.randrange(len(values))]) for key, values in space.items()}
            for _ in range(int(n))]


def draw_config(conf: Mapping[str, Any], space: Mapping[str, Sequence[Any]]) -> dict:
    """``conf`` with draw ``conf["search_draw"]`` of ``space`` (seed ``conf["search_seed"]``) set at its dotted
    keys, the drawn values recorded under ``search_values``; ``search_draw`` 0: ``conf`` unchanged."""
    k = int(conf.get("search_draw") or 0)
    if k == 0:
        return dict(conf)
    if k < 0:
        raise ValueError(f"search_draw must be >= 0, got {k}")
    if not space:
        raise ValueError(f"head {conf.get('head')}: search_draw={k} but the head has no search space (no tune lists)")
    drawn = draw_trials(space, k, int(conf.get("search_seed") or 0))[k - 1]
    out = copy.deepcopy(dict(conf))
    for key, value in drawn.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"tune key {key!r}: {p!r} is not a mapping of the training config")
            node = node[p]
        node[leaf] = value
    out["search_values"] = drawn
    return out


def select_best(records: Sequence[Mapping[str, Any]], metric: str, mode: str = "max") -> int:
    """Index of the record whose ``record["val"][metric]`` is best (``mode`` max or min); earlier wins ties.

    Each record is a mapping with at least ``val`` (validation metrics); anything else in it (the config, test
    metrics) is ignored, so the choice can never depend on test results.  NaN validation values never win."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not records:
        raise ValueError("no trials to select from")
    best, best_value = None, None
    for i, rec in enumerate(records):
        val = rec.get("val")
        if not isinstance(val, Mapping) or metric not in val:
            raise ValueError(f"trial {i} has no validation metric {metric!r} (has {sorted(val or {})})")
        v = float(val[metric])
        if math.isnan(v):
            continue
        if best is None or (v > best_value if mode == "max" else v < best_value):
            best, best_value = i, v
    if best is None:
        raise ValueError(f"every trial has a NaN validation {metric!r}")
    return best

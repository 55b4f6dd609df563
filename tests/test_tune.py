"""Random search: draws, determinism, routing into model/train confs, selection on validation only; the
conf/fusion/*.yaml files agree with the models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from etser.models.fusion import FUSION_MODELS, build_fusion
from etser.models.fusion.base import COMMON_DEFAULTS
from etser.learn.tune import apply_trial, draw_trials, load_search_space, select_best

CONF = Path(__file__).resolve().parents[1] / "conf" / "fusion"


def test_draws_are_deterministic_and_from_the_lists():
    space = {"hidden_dim": [64, 128, 256], "lr": [1e-3, 1e-4], "rank": [3]}
    a, b = draw_trials(space, 50, seed=7), draw_trials(space, 50, seed=7)
    assert a == b and len(a) == 50
    assert a != draw_trials(space, 50, seed=8)
    assert all(t["rank"] == 3 and t["hidden_dim"] in space["hidden_dim"] and t["lr"] in space["lr"] for t in a)
    assert {t["hidden_dim"] for t in a} == {64, 128, 256}  # every value drawn at some point
    assert draw_trials(space, 3, seed=7) == a[:3]  # more trials extend, never reshuffle
    with pytest.raises(ValueError, match="non-empty list"):
        draw_trials({"x": []}, 1, 0)


def test_apply_trial_routes_keys():
    conf = {"model": {"hidden_dim": 8, "dropout": 0.1}, "train": {"lr": 0.1, "grad_clip": -1.0}}
    model, train = apply_trial(conf, {"hidden_dim": 64, "lr": 1e-4})
    assert model == {"hidden_dim": 64, "dropout": 0.1} and train == {"lr": 1e-4, "grad_clip": -1.0}
    assert conf["model"]["hidden_dim"] == 8  # not modified
    with pytest.raises(ValueError, match="'layers' is neither"):
        apply_trial(conf, {"layers": 2})


def test_select_best_uses_validation_only():
    records = [{"config": {"i": 0}, "val": {"f1": 0.5}, "test": {"f1": 0.9}},
               {"config": {"i": 1}, "val": {"f1": 0.7}, "test": {"f1": 0.1}},
               {"config": {"i": 2}, "val": {"f1": 0.7}, "test": {"f1": 0.99}},
               {"config": {"i": 3}, "val": {"f1": float("nan")}, "test": {"f1": 1.0}}]
    assert select_best(records, "f1") == 1  # tie -> earlier; test never consulted
    assert select_best(records, "f1", mode="min") == 0
    with pytest.raises(ValueError, match="trial 0 has no validation metric 'ua'"):
        select_best(records, "ua")
    with pytest.raises(ValueError, match="NaN"):
        select_best([{"val": {"f1": math.nan}}], "f1")


@pytest.mark.parametrize("name", sorted(FUSION_MODELS))
def test_fusion_yaml_matches_the_model(name):
    conf = load_search_space(CONF / f"{name}.yaml")
    assert conf["model"] == {**COMMON_DEFAULTS, **FUSION_MODELS[name].defaults}
    assert set(conf["train"]) == {"lr", "grad_clip"}
    for key, values in conf["tune"].items():
        default = conf["model"].get(key, conf["train"].get(key))
        assert default in values, f"{name}: default {key}={default} not in its tune list {values}"
        assert all(isinstance(v, (int, float)) for v in values), f"{name}: {key} has non-numbers {values}"
    # every trial builds a model
    for trial in draw_trials(conf["tune"], 3, seed=0):
        model_conf, _ = apply_trial(conf, trial)
        if name == "mult":
            assert model_conf["hidden_dim"] % model_conf["num_heads"] == 0
        elif name == "tfn":
            model_conf["hidden_dim"] = 4  # TFN's (h+1)^3 product is large at the real sizes
        build_fusion(name, {"speech": 4, "text": 3, "visual": 2}, 2, model_conf)

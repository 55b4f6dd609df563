"""Random search: draws, determinism, routing into model/train confs, selection on validation only; the
conf/fusion/*.yaml files agree with the models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from etser.models.fusion import FUSION_MODELS, build_fusion
from etser.models.fusion.base import COMMON_DEFAULTS
from etser.learn.trainconf import load_config
from etser.learn.tune import draw_config, draw_trials, load_search_space, select_best

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


def test_a_draw_is_a_training_config():
    """search_draw k of seed S sets the k-th draw's values at their dotted keys, the same for every N."""
    ROOT = CONF.parents[1]
    space = load_config(ROOT / "conf/train/paper.yaml")["tune"]
    assert list(space) == ["head_conf.fusion_conf.hidden_dim", "head_conf.fusion_conf.dropout", "optim_conf.lr"]
    draws = draw_trials(space, 5, seed=4)
    for k in (1, 5):
        conf = load_config(ROOT / "conf/train/paper.yaml", [f"search_draw={k}", "search_seed=4"])
        assert conf["head_conf"]["fusion_conf"]["hidden_dim"] == draws[k - 1]["head_conf.fusion_conf.hidden_dim"]
        assert conf["optim_conf"] == {"lr": draws[k - 1]["optim_conf.lr"], "weight_decay": 1e-5}
        assert conf["search_values"]["optim_conf.lr"] == draws[k - 1]["optim_conf.lr"]
        assert conf["head_conf"]["fusion_conf"]["official"] is True   # keys not tuned stay as configured
    assert draw_config({"search_draw": 0, "x": 1}, space) == {"search_draw": 0, "x": 1}
    with pytest.raises(ValueError, match="head superb: search_draw=2 but the head has no search space"):
        load_config(ROOT / "conf/train/superb.yaml", ["search_draw=2"])
    # a fusion head's space is its conf/fusion YAML's tune lists at training-config keys, in that file's order
    conf = load_config(ROOT / "conf/train/fusion.yaml", ["head_conf.algo=lmf", "search_draw=3", "search_seed=1"])
    lists = load_search_space(CONF / "lmf.yaml")["tune"]
    want = draw_trials(lists, 3, seed=1)[2]
    assert conf["head_conf"]["fusion_conf"]["rank"] == want["rank"] and conf["optim_conf"]["lr"] == want["lr"]
    assert conf["grad_clip"] == want["grad_clip"] and conf["grad_clip_mode"] == "value"


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
    # every draw builds a model
    for k in (1, 2, 3):
        model_conf = load_config(CONF.parents[1] / "conf/train/fusion.yaml",
                                 [f"head_conf.algo={name}", f"search_draw={k}"])["head_conf"]["fusion_conf"]
        if name == "mult":
            assert model_conf["hidden_dim"] % model_conf["num_heads"] == 0
        elif name == "tfn":
            model_conf["hidden_dim"] = 4  # TFN's (h+1)^3 product is large at the real sizes
        build_fusion(name, {"speech": 4, "text": 3, "visual": 2}, 2, model_conf)

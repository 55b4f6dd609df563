"""Stage-3 training configs: the defaults and the loader (YAML file <- ``key=value`` overrides).

Apart from etser.learn.train so that run.sh's option check (etser.plan) can validate a config's keys without
importing the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from etser.models.heads import head_class
from etser.learn import config as learn_config


DEFAULTS = {
    "head": None,
    "head_conf": {},
    "optim": "adam",
    "optim_conf": {"lr": 1.0e-3},
    "batch_size": 32,
    "grad_clip": None,          # max gradient norm; null: no clipping
    "max_epochs": 100,
    "patience": 20,             # epochs without val improvement before stopping; null: never stop early
    "shuffle": True,            # a new order of the training set every epoch; false: its order (official code)
    "select_metric": None,      # of the task's metrics (ua | wa | macro_f1 | weighted_f1; continuous: f1_weighted |
                                # acc2 | mae | pearson | ccc), or a mapping kind -> metric; null: the task's default
    "class_weighted_loss": False,
    "keep_checkpoints": 2,      # per-epoch checkpoints kept (the last ones)
    "train_set": "train",
    "valid_set": "val",
    "preload_frames_gb": 2.0,   # frame heads: hold frames in memory up to this size, else read per batch
    "grad_clip_mode": "norm",   # norm (clip_grad_norm_) | value (clip_grad_value_, MERBench); grad_clip <= 0: none
    "allow_missing": False,     # several streams: an utterance without features in one is a missing modality
    "fusion_conf_dir": None,    # fusion head: conf/fusion/<algo>.yaml (model defaults, train lr/grad_clip, tune)
    "tune": {},                 # random-search lists of the head: dotted key -> values (a fusion head adds its algo's)
    "search_draw": 0,           # k > 0: this training is draw k of the search (etser.learn.tune.draw_config); 0: none
    "search_seed": 0,           # ... seed of the draws
    "protocol": learn_config.DEFAULT_PROTOCOL,  # the conf/protocol/<name>.yaml the planner wrote this training's options from
}


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides (the one loader, :func:`etser.learn.config.load_config`),
    then the head's own completion (a fusion head: its algorithm's conf/fusion YAML)."""
    conf = learn_config.load_config(path, overrides, DEFAULTS)
    if conf["head"] is None:
        raise ValueError(f"{path or 'config'}: 'head' is not set (superb, paper, attentive)")
    learn_config.check_choice(conf, "grad_clip_mode", ("norm", "value"))
    if not isinstance(conf["shuffle"], bool):
        raise ValueError(f"{path or 'config'}: shuffle must be true or false, got {conf['shuffle']!r}")
    conf = head_class(conf["head"]).complete_config(conf, {item.partition("=")[0] for item in overrides})
    return conf

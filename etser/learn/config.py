"""The one config loader of stages 3-5 (conf/train, conf/caption YAML): defaults <- YAML file <- ``key=value``
overrides, unknown keys refused naming the file.  Each trainer gives its defaults and checks its own values.

Cheap to import (no torch), so that the recipe's planning checks every config before any job starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

from etser.yamlfile import parse_yaml, read_yaml

OPTIMIZER_NAMES = ("adam", "adamw", "sgd")   # torch.optim classes of etser.learn.loop


def load_config(path: Path | None, overrides: Sequence[str], defaults: Mapping) -> dict:
    """``defaults`` <- YAML file <- ``key=value`` overrides (value parsed as YAML; ``a.b=v`` sets a nested key);
    a mapping in the file is merged into the default mapping of its key."""
    conf = copy.deepcopy(dict(defaults))
    if path is not None:
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of options")
        unknown = sorted(set(loaded) - set(defaults))
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
        for k, v in loaded.items():
            conf[k] = {**conf[k], **v} if isinstance(conf[k], dict) and isinstance(v, dict) else v
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--conf {item!r}: expected key=value")
        *parents, leaf = key.split(".")
        if (parents[0] if parents else leaf) not in defaults:
            raise ValueError(f"--conf {item!r}: unknown option {key.split('.')[0]!r}")
        node = conf
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse_yaml(value, f"--conf {item!r}")
    check_choice(conf, "optim", OPTIMIZER_NAMES)
    return conf


def check_choice(conf: Mapping, key: str, choices: Sequence[str]) -> None:
    if conf[key] not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, got {conf[key]!r}")

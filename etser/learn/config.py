"""The one config loader of stages 3-5 (conf/train, conf/caption YAML): defaults <- YAML file <- ``key=value``
overrides, unknown keys refused naming the file.  Each trainer gives its defaults and checks its own values.

Cheap to import (no torch), so that the recipe's planning checks every config before any job starts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Mapping, Sequence

from etser.yamlfile import parse_yaml, read_mapping

OPTIMIZER_NAMES = ("adam", "adamw", "sgd")   # torch.optim classes of etser.learn.loop


def load_config(path: Path | None, overrides: Sequence[str], defaults: Mapping) -> dict:
    """``defaults`` <- YAML file <- ``key=value`` overrides (value parsed as YAML; ``a.b=v`` sets a nested key);
    a mapping in the file is merged into the default mapping of its key."""
    conf = copy.deepcopy(dict(defaults))
    if path is not None:
        loaded = read_mapping(path, defaults, "option")
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


# ---------------------------------------------------------------- protocols (conf/protocol/<name>.yaml)

DEFAULT_PROTOCOL = "corrected"   # the protocol of a training that names none (runs made before protocols too)
# run.sh options a protocol sets (unless given on the command line): the job lines' heads, seeds and searches
PROTOCOL_RUN_OPTIONS = ("heads", "seeds", "search_trials", "search_runs", "search_seed")
PROTOCOL_SECTIONS = ("name", "version", "description", "run", "train", "fusion", "report")
PROTOCOL_REPORT_OPTIONS = ("sentiment_discrete",)


def load_protocol(path: Path) -> dict:
    """A training protocol: a named, versioned set of choices of stages 3-5 (conf/protocol/<name>.yaml).

    ``run``: run.sh options (:data:`PROTOCOL_RUN_OPTIONS`); ``train``: ``key: value`` options of every training
    line (conf/train keys, ``a.b`` for nested ones), ``fusion``: of the fusion lines only; ``report``: how
    stage 5 reads the runs (``sentiment_discrete``: the algorithm whose Multi runs fill the sentiment table's
    Discrete columns; null: each row's own).  The trainer's loader checks the train and fusion keys when the
    planner checks the run (etser.launch.plan check)."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"{path} not found: no such protocol; known: {', '.join(known) or '(none)'}")
    doc = read_mapping(path, PROTOCOL_SECTIONS, "key")
    if doc.get("name") != path.stem:
        raise ValueError(f"{path}: name must be {path.stem!r} (the file's name), got {doc.get('name')!r}")
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        raise ValueError(f"{path}: version must be an integer, got {doc.get('version')!r}")
    out = {"name": doc["name"], "version": doc["version"], "description": str(doc.get("description") or ""),
           "path": str(path)}
    for section, allowed in (("run", PROTOCOL_RUN_OPTIONS), ("train", None), ("fusion", None),
                             ("report", PROTOCOL_REPORT_OPTIONS)):
        value = doc.get(section) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{path}: {section} must be a mapping, got {value!r}")
        bad = sorted(set(value) - set(allowed)) if allowed else []
        if bad:
            raise ValueError(f"{path}: {section}: unknown option(s) {', '.join(bad)}; known: {', '.join(allowed)}")
        out[section] = dict(value)
    return out


def protocol_overrides(protocol: Mapping | None, family: str, default_name: str) -> list[str]:
    """The ``key=value`` options a protocol adds to a training line of ``family`` (classifier | fusion): its
    ``train`` section, the ``fusion`` one for fusion lines, and ``protocol=<name>`` unless it is the default
    (``default_name``): the default protocol's lines are the lines without one."""
    if protocol is None:
        return []
    items = dict(protocol["train"])
    # a family with a section of its own (fusion) adds it; the others have only the common ``train``
    items.update((protocol.get(family) or {}) if family in PROTOCOL_SECTIONS else {})
    if protocol["name"] != default_name:
        items["protocol"] = protocol["name"]
    # a string stays as it is when it reads back as itself (protocol=official), anything else as JSON (YAML)
    return [f"{k}={v if isinstance(v, str) and parse_yaml(v, k) == v else json.dumps(v)}" for k, v in items.items()]

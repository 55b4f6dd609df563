"""The one reader of YAML (config files, task lists, results tables, exp dirs' config.yaml, and the values of
``--conf key=value``).

Plain data only (``yaml.safe_load``): a Python tag (``!!python/object/apply:…``) or a syntax error is a
ValueError that names the file and the line (or the option), not a bare ConstructorError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


def read_yaml(path: str | Path) -> Any:
    """The content of the YAML file ``path`` as plain Python data (None for an empty file)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        return _load(f, str(path), "file")


def read_mapping(path: str | Path, known: Sequence[str], what: str, renamed: Mapping[str, str] | None = None) -> dict:
    """A YAML file of ``what``s: a mapping whose keys are all in ``known`` (an empty file is an empty mapping);
    a key of ``renamed`` is refused saying what replaced it."""
    doc = read_yaml(path) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of {what}s ({', '.join(known)})")
    moved = [f"{k} was replaced by {renamed[k]}" for k in doc if k in (renamed or {})]
    if moved:
        raise ValueError(f"{path}: " + "; ".join(moved))
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return doc


def parse_yaml(text: str, where: str) -> Any:
    """A YAML value given as text (e.g. of ``--conf key=value``); ``where`` names it in errors."""
    return _load(text, where, "value")


def _load(stream, where: str, what: str) -> Any:
    try:
        return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where}{at}: not a plain-data YAML {what}: {problem} (only mappings, lists, strings, "
                         "numbers and booleans are read; no Python tags)") from None

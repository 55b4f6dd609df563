"""The one reader of YAML files (configs, task lists, results tables, exp dirs' config.yaml).

Plain data only (``yaml.safe_load``): a Python tag (``!!python/object/apply:…``) or a syntax error is a
ValueError that names the file and the line, not a bare ConstructorError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path) -> Any:
    """The content of the YAML file ``path`` as plain Python data (None for an empty file)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}{where}: not a plain-data YAML file: {problem} (only mappings, lists, strings, "
                         "numbers and booleans are read; no Python tags)") from None

"""The reader of stage 4's outputs: every scored run under an exp tree (used by every RESULTS.md section)."""

from __future__ import annotations

import json
from pathlib import Path

from etser.tasks import kind_class


def find_metrics(exp_root: Path, set_name: str = "test") -> list[dict]:
    """Every ``decode_<set>/metrics.json`` under ``exp_root`` with its exp dir, sorted by path."""
    found = []
    for path in sorted(Path(exp_root).glob(f"*/*/*/seed*/decode_{set_name}/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); rerun stage 4 for {path.parent.parent}") from None
        keys = kind_class(m.get("kind", "classes"), str(path)).metric_names
        missing = [k for k in (*keys, "task", "head", "seed", "tag") if k not in m]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)}; rerun stage 4 for {path.parent.parent}")
        m["exp_dir"] = str(path.parent.parent)
        m.setdefault("modality", "speech")
        m.setdefault("kind", "classes")
        miss = path.parent / "missing.json"
        if miss.is_file():
            m["missing"] = json.loads(miss.read_text())["patterns"]
        found.append(m)
    return found


def fused(m: dict) -> bool:
    """Whether a scoring is of a model over several streams (a fusion model): its head says how many it reads."""
    from etser import models

    head = models.discover("head").get(m["head"])
    return head is not None and head.num_streams != 1

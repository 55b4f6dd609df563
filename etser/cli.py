"""Small pieces shared by the command-line entry points (stdlib only, cheap to import)."""

from __future__ import annotations

import argparse


def str2bool(value: str) -> bool:
    """argparse type for Kaldi-style boolean options (``--strict true``)."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def name_value_items(spec: str, option: str, expected: str = "NAME=VALUE") -> list[tuple[str, str]]:
    """``"speech=A text=B"`` -> [(name, value)] in order; ValueError naming ``option`` for an item without
    ``=`` or a name given twice."""
    out: list[tuple[str, str]] = []
    for item in spec.split():
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise ValueError(f"{option} item {item!r}: expected {expected}")
        if any(name == n for n, _ in out):
            raise ValueError(f"{option} names stream {name} twice")
        out.append((name, value))
    return out

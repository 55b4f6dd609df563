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

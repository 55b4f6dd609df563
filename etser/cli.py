"""Small pieces shared by the command-line entry points (stdlib only, cheap to import)."""

from __future__ import annotations

import argparse
from pathlib import Path


def str2bool(value: str) -> bool:
    """argparse type for Kaldi-style boolean options (``--strict true``)."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def job_parser(prog: str) -> argparse.ArgumentParser:
    """``--job_list FILE --job N --num_jobs M``: run lines N, N+M, ... of a job file (arguments of one run each)."""
    ap = argparse.ArgumentParser(prog=prog, add_help=False)
    ap.add_argument("--job_list", type=Path)
    ap.add_argument("--job", type=int, default=1)
    ap.add_argument("--num_jobs", type=int, default=1)
    return ap

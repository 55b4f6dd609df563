"""Whether a live Slurm is here: tests that need one skip without it, or fail when CI requires it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SETUP_HINT = "start a one-node cluster with: sudo .ci/slurm_setup.sh"


def slurm_problem() -> str | None:
    """None when sbatch exists and the controller answers with a usable node, else why not."""
    if shutil.which("sbatch") is None:
        return f"sbatch not found (no Slurm client installed; {SETUP_HINT})"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if r.returncode != 0:
        return f"Slurm controller does not answer: {r.stderr.strip()} ({SETUP_HINT})"
    states = r.stdout.split()
    if not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable Slurm node (sinfo states: {' '.join(states) or 'none'})"
    return None


def require_slurm() -> None:
    """Skip (locally) or fail (ETSER_REQUIRE_SLURM=1, as CI sets it) when there is no live Slurm."""
    problem = slurm_problem()
    if problem is None:
        return
    if os.environ.get("ETSER_REQUIRE_SLURM") == "1":
        pytest.fail(f"ETSER_REQUIRE_SLURM=1 but {problem}", pytrace=False)
    pytest.skip(f"no live Slurm: {problem}")

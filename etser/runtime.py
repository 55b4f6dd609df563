"""Where and how a job runs: device for ``--ngpu``, device name, CPU threads, peak memory, job lists.

Cheap to import (torch only when a device is asked for); used by training, scoring and inference alike.
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
from pathlib import Path


def pick_device(ngpu: int) -> str:
    """``cpu`` for ``--ngpu 0``, else ``cuda`` (an error naming the host when CUDA is absent)."""
    if ngpu <= 0:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"--ngpu {ngpu} but CUDA is not available on {os.uname().nodename}; use --ngpu 0")
    return "cuda"


def device_name(device: str) -> str:
    """``cuda: NVIDIA H100 80GB HBM3`` / ``cpu: <model name>`` for the environment section of RESULTS.md."""
    if device != "cpu":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.machine()}"


def set_threads(num_threads: int, device: str = "cpu") -> None:
    """torch CPU threads; deterministic cuDNN on a GPU (the heads' CPU kernels are deterministic for a fixed
    thread count: torch.use_deterministic_algorithms would add 2 s of imports and change nothing here)."""
    import torch

    torch.set_num_threads(num_threads)
    if device != "cpu":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_job_list(path: Path) -> list[list[str]]:
    """Argument lists of a job file: one shell-quoted line per run; blank lines and ``#`` comments skipped."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


def job_list_lines(path: Path, job: int, num_jobs: int) -> list[list[str]]:
    """Argument lists of the lines of ``path`` that job ``job`` (1-based) of ``num_jobs`` runs (round robin)."""
    if not 1 <= job <= num_jobs:
        raise ValueError(f"--job {job} is not in 1..{num_jobs}")
    return [line for i, line in enumerate(read_job_list(path)) if i % num_jobs == job - 1]

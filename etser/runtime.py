"""Where and how a job runs: device for ``--ngpu``, device name, CPU threads, peak memory, job files.

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


# The job-file protocol of stages 3 and 4: header lines ``# module: <python module>`` (the job module whose
# ``run_line`` runs each line) and ``# runs_per_job: <N>`` (how many lines one job process should take),
# then one shell-quoted argument line per run.  Written by etser.launch.plan, run by etser.launch.run.
JOB_HEADER_KEYS = ("module", "runs_per_job")


def write_job_file(path: Path, module: str, runs_per_job: int, lines: list[str]) -> None:
    """Write a job file atomically (a killed planner leaves the old file or the new one, never half of one)."""
    if runs_per_job < 1:
        raise ValueError(f"runs_per_job {runs_per_job}: at least 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# module: {module}\n# runs_per_job: {int(runs_per_job)}\n" + "".join(line + "\n" for line in lines),
                   encoding="utf-8")
    tmp.replace(path)


def job_file_header(path: Path) -> dict:
    """``{"module": str, "runs_per_job": int}`` of a job file; an error naming the file when either is absent."""
    header = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() in JOB_HEADER_KEYS:
                header[key.strip()] = value.strip()
    missing = [k for k in JOB_HEADER_KEYS if not header.get(k)]
    if missing:
        raise ValueError(f"{path}: no '# {missing[0]}: ...' header line (a job file is written by "
                         "python -m etser.launch.plan)")
    try:
        header["runs_per_job"] = int(header["runs_per_job"])
        if header["runs_per_job"] < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}: '# runs_per_job: {header['runs_per_job']}' is not a positive integer") from None
    return header


def num_jobs(num_runs: int, runs_per_job: int, max_jobs: int) -> int:
    """Jobs for ``num_runs`` lines: about ``runs_per_job`` lines each, at most ``max_jobs`` (--nj) of them."""
    return min(-(-num_runs // runs_per_job), max_jobs)


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

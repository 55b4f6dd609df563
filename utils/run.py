#!/usr/bin/env python3
"""Run jobs on this machine with the interface of Kaldi's run.pl.

    utils/run.py [options] JOB=1:N log/x.JOB.log command args ... JOB ...
    utils/run.py [options] JOB=3 log/x.JOB.log command ...      # job 3 only
    utils/run.py [options] log/x.log command ...                # one job

Runs the N jobs, at most --max_jobs_run at once, each through ``bash -c`` with stdout and stderr in its
own log (JOB replaced by the index everywhere).  A log starts with the command line and start time and ends
with ``# Ended (code C) at DATE, elapsed time S seconds``.  Exits 0 when every job succeeded, otherwise 1
with a message naming how many and which jobs failed, their logs, and the end of the first failed log.

Options (``--name value``, ``--name=value``, dashes or underscores):
  --max_jobs_run K   jobs at once (default: CPUs available // --num_threads, at least 1)
  --num_threads T    threads per job: sets OMP/MKL/OPENBLAS_NUM_THREADS=T in the job's environment
  --gpu G            GPUs per job: each job gets its own CUDA_VISIBLE_DEVICES, round robin over the GPUs
                     visible here (this process's CUDA_VISIBLE_DEVICES list, else `nvidia-smi -L`, else
                     0..G-1); more jobs than GPUs share them in turn.  0 (the default): left as it is
  --mem M, --time T, --partition P, --config F
                     accepted and ignored, so a command line written for utils/slurm.py runs here too
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from etser.launch.jobs import (failure_message, gpus_of_job, int_option, job_env, log_footer,  # noqa: E402
                        log_header, open_log, parse_launcher_args, shell_code, substitute, visible_gpus)

PROG = "run.py"


def _death_signal_setter():
    """Linux: a function for the child side of fork that makes the job get SIGTERM when this launcher dies,
    even by SIGKILL, instead of running on unowned.  None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc, loaded once here, not in the child
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv else 1
    try:
        a = parse_launcher_args(argv, PROG)
        threads = int_option(a.options, "num_threads", None)
        default_jobs = max(1, available_cpus() // max(1, threads or 1))
        max_jobs = int_option(a.options, "max_jobs_run", default_jobs) or default_jobs
        gpus_per_job = int_option(a.options, "gpu", 0)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2

    indices = list(a.spec.indices) if a.spec else [0]

    def expand(text: str, index: int) -> str:
        return substitute(text, a.spec.var, index) if a.spec else text

    pending = deque(indices)
    running: dict[int, tuple[int, subprocess.Popen, object, float]] = {}
    codes: dict[int, int] = {}
    stop: list[int] = []
    devices = visible_gpus(fallback=gpus_per_job) if gpus_per_job else []
    die_with_parent = _death_signal_setter()

    def on_signal(signum, _frame):
        # Stop starting jobs; pass the signal to the running ones and let the loop collect them.
        stop.append(signum)
        for _, proc, _, _ in running.values():
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    while pending or running:
        while pending and len(running) < max_jobs and not stop:
            index = pending.popleft()
            command = expand(a.command, index)
            try:
                f = open_log(expand(a.log, index))
            except OSError as e:
                print(f"{PROG}: cannot write log {expand(a.log, index)}: {e}", file=sys.stderr)
                codes[index] = 1
                continue
            f.write(log_header(command))
            gpus = gpus_of_job(indices.index(index), gpus_per_job, devices) if gpus_per_job else None
            if gpus is not None:
                f.write(f"# CUDA_VISIBLE_DEVICES={','.join(gpus)}\n")
            f.flush()
            proc = subprocess.Popen(["bash", "-c", command], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL if len(indices) > 1 else None,
                                    env=job_env(threads, gpus),
                                    preexec_fn=die_with_parent)
            running[proc.pid] = (index, proc, f, time.monotonic())
        if not running:
            break
        pid, status = os.wait()
        if pid not in running:
            continue
        index, proc, f, start = running.pop(pid)
        code = shell_code(os.waitstatus_to_exitcode(status))
        proc.returncode = code  # reaped here, so Popen must not wait for it again
        f.write(log_footer(code, time.monotonic() - start, threads or 1))
        f.close()
        codes[index] = code

    failed = [i for i in indices if codes.get(i, 0) != 0]
    not_started = [i for i in indices if i not in codes]
    if stop:
        print(f"{PROG}: interrupted by signal {stop[0]}; {len(not_started)} of {len(indices)} jobs "
              f"not started", file=sys.stderr)
    if failed:
        print(failure_message(PROG, [i if a.spec else 0 for i in failed], len(indices),
                              [expand(a.log, i) for i in failed]), file=sys.stderr)
    if len(indices) > 1 and not failed and not stop:
        print(f"{PROG}: {len(indices)} jobs done in {time.monotonic() - t0:.1f} s, at most {max_jobs} at "
              f"once; logs: {substitute(a.log, a.spec.var, '*')}", file=sys.stderr)
    if stop:
        return 128 + stop[0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the job launchers share: the Kaldi ``$cmd`` interface and the per-job log.

Both launchers take the same command line as Kaldi's ``run.pl`` / ``slurm.pl``::

    utils/run.py   [options] JOB=1:N log/extract.JOB.log prog --part JOB ...
    utils/slurm.py [options] JOB=1:N log/extract.JOB.log prog --part JOB ...

``JOB`` (any name: ``SPK=1:4`` works too) is replaced by the job index in the log path and in every
argument.  ``JOB=3`` runs only job 3; with no spec the command runs once.  Each job's log starts with the
command line and start time and ends with the exit code, end time and elapsed seconds, in the format of
Kaldi's logs (``# Ended (code 0) at ...``) so Kaldi's log tools read them.

This module uses only the standard library: the Slurm backend runs it on compute nodes as the per-task
wrapper (``python -m etser.launch.jobs task ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

# Options every launcher accepts (Kaldi spells them with dashes, ESPnet with underscores: both work).
LAUNCHER_OPTIONS = ("max_jobs_run", "num_threads", "gpu", "mem", "time", "partition", "config")

_SPEC = re.compile(r"^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$")
_LOOKS_LIKE_SPEC = re.compile(r"^[A-Za-z_]\w*=[\d:]*$")
_ENDED = re.compile(r"^# Ended \(code (-?\d+)\)")


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """``JOB=1:N`` (var, first, last); ``JOB=3`` is first == last."""

    var: str
    first: int
    last: int

    @property
    def indices(self) -> range:
        return range(self.first, self.last + 1)


def parse_job_spec(token: str) -> JobSpec | None:
    """``JOB=1:4`` -> JobSpec; a token that is not a job spec -> None; a malformed one -> ValueError."""
    m = _SPEC.match(token)
    if m is None:
        if _LOOKS_LIKE_SPEC.match(token):
            raise ValueError(f"bad job spec {token!r}: expected e.g. JOB=1:4 or JOB=3")
        return None
    var, first = m.group(1), int(m.group(2))
    last = int(m.group(3)) if m.group(3) is not None else first
    if first < 1 or last < first:
        raise ValueError(f"bad job spec {token!r}: need 1 <= first <= last")
    return JobSpec(var, first, last)


def substitute(text: str, var: str, index: int | str) -> str:
    """Replace ``var`` by the job index wherever it stands (``x.JOB.log``, ``feats_JOB.ark``, ``--part JOB``)
    except inside a longer upper-case name, so ``$SLURM_ARRAY_JOB_ID`` or ``JOBS`` stay as they are
    (Kaldi's run.pl replaces every substring and breaks those)."""
    pattern = rf"(?<![A-Z0-9])(?<![A-Z0-9]_){re.escape(var)}(?!_?[A-Z0-9])"
    return re.sub(pattern, lambda _: str(index), text)


def shell_join(args: Sequence[str]) -> str:
    """Join a command for ``bash -c`` the way run.pl does.

    A word without whitespace is passed as is, so ``prog ark:- \\| other`` still builds a pipe; a word with
    whitespace (a path with spaces) is quoted so it stays one word.  A command given as one single word is a
    shell command line used verbatim (``$cmd log/x.log 'a | b && c'``).
    """
    if len(args) == 1:
        return args[0]
    return " ".join(a if a and not re.search(r"\s", a) else shlex.quote(a) for a in args)


@dataclasses.dataclass
class LauncherArgs:
    options: dict[str, str]
    spec: JobSpec | None
    log: str
    command: str


def parse_launcher_args(argv: Sequence[str], prog: str) -> LauncherArgs:
    """``[--opt value]... [JOB=a:b] log cmd...`` -> LauncherArgs.  ``--opt=value`` also works."""
    argv = list(argv)
    options: dict[str, str] = {}
    while argv and argv[0].startswith("--"):
        word = argv.pop(0)
        name, eq, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if name not in LAUNCHER_OPTIONS:
            raise ValueError(f"{prog}: unknown option --{name} (known: "
                             + ", ".join(f"--{o}" for o in LAUNCHER_OPTIONS) + ")")
        if not eq:
            if not argv:
                raise ValueError(f"{prog}: option --{name} needs a value")
            value = argv.pop(0)
        options[name] = value
    spec = parse_job_spec(argv[0]) if argv else None
    if spec is not None:
        argv.pop(0)
    if len(argv) < 2:
        raise ValueError(f"usage: {prog} [options] [JOB=1:N] log/x.JOB.log command [args...]")
    log = argv.pop(0)
    if spec is not None and spec.first != spec.last and substitute(log, spec.var, "") == log:
        raise ValueError(f"{prog}: {spec.first}..{spec.last} jobs would share one log {log!r}: "
                         f"put {spec.var} in the log path")
    return LauncherArgs(options, spec, log, shell_join(argv))


def int_option(options: dict[str, str], name: str, default: int | None) -> int | None:
    if name not in options:
        return default
    try:
        value = int(options[name])
    except ValueError:
        raise ValueError(f"--{name} wants an integer, got {options[name]!r}") from None
    if value < 0:
        raise ValueError(f"--{name} must be >= 0, got {value}")
    return value


def now_string() -> str:
    """The date as ``date`` prints it (Kaldi's logs use that)."""
    return time.strftime("%a %b %d %H:%M:%S %Z %Y")


def shell_code(returncode: int) -> int:
    """A Popen return code as the shell shows it: 128 + N for a job killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def log_header(command: str) -> str:
    return f"# {command}\n# Started at {now_string()}\n#\n"


def log_footer(code: int, elapsed: float, threads: int = 1) -> str:
    return (f"# Accounting: time={round(elapsed)} threads={threads}\n"
            f"# Ended (code {code}) at {now_string()}, elapsed time {elapsed:.1f} seconds\n")


def _last_lines(path: str | os.PathLike, nbytes: int) -> list[str]:
    """The lines of a log's last nbytes ([] when it cannot be read): logs can be long, their ends matter."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def exit_code_in_log(path: str | os.PathLike) -> int | None:
    """The code in the log's ``# Ended (code N)`` line; None when it has none (job killed or still running)."""
    for line in reversed(_last_lines(path, 4096)):
        m = _ENDED.match(line)
        if m:
            return int(m.group(1))
    return None


def tail_lines(path: str | os.PathLike, n: int = 6) -> list[str]:
    """Last n lines of a log, without our footer lines (what the user needs to see)."""
    lines = [x for x in _last_lines(path, 8192) if not x.startswith(("# Accounting:", "# Ended (code"))]
    return lines[-n:]


def failure_message(prog: str, failed: Sequence[int], total: int, logs: Sequence[str],
                    reasons: Sequence[str] | None = None, noun: str = "job") -> str:
    """One paragraph naming how many and which jobs failed, their logs, and the end of the first log.
    A job index 0 stands for the single job of a command line without JOB=."""
    if total == 1 and len(failed) == 1:
        head = f"{prog}: {noun} {failed[0]} failed" if failed[0] else f"{prog}: {noun} failed"
    else:
        head = f"{prog}: {len(failed)} / {total} {noun}s failed ({' '.join(map(str, failed))})"
    lines = [head]
    for i, path in enumerate(logs):
        why = f" [{reasons[i]}]" if reasons and reasons[i] else ""
        lines.append(f"  log: {path}{why}")
    end = tail_lines(logs[0]) if logs else []
    if end:
        lines.append(f"  end of {logs[0]}:")
        lines.extend(f"    {x}" for x in end)
    return "\n".join(lines)


def open_log(path: str | os.PathLike):
    """Truncate/create a job log (making its directory) and return it open for appending."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8", errors="replace")


def job_env(threads: int | None, gpus: Sequence[str] | None = None) -> dict[str, str] | None:
    """Environment for a job: with --num_threads T the BLAS/OpenMP pools get T threads; ``gpus``: the
    job's ``CUDA_VISIBLE_DEVICES`` (a local job sees only its own GPUs, as under Slurm's --gres)."""
    if threads is None and gpus is None:
        return None
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def visible_gpus(environ: dict[str, str] | None = None, fallback: int = 1) -> list[str]:
    """The GPUs local jobs are spread over: the parent's ``CUDA_VISIBLE_DEVICES`` list when set (ids or UUIDs,
    kept as given), else one per line of ``nvidia-smi -L``, else ``0..fallback-1``."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0:
        count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        if count:
            return [str(i) for i in range(count)]
    return [str(i) for i in range(max(1, fallback))]


def gpus_of_job(position: int, per_job: int, devices: Sequence[str]) -> list[str]:
    """Round robin: the job at 0-based ``position`` gets ``per_job`` consecutive devices of the cycle, so
    ``--gpu 1`` with 4 GPUs puts jobs 1..4 on GPUs 0..3 and job 5 back on GPU 0."""
    if per_job >= len(devices):
        return list(devices)
    return [devices[(position * per_job + k) % len(devices)] for k in range(per_job)]


def run_task(command: str, out, threads: int | None = None) -> int:
    """Run one job in the foreground, writing header, its output and footer to the open file ``out``."""
    out.write(log_header(command))
    out.flush()
    start = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT,
                            env=job_env(threads))

    def forward(signum, _frame):
        proc.send_signal(signum)

    # Slurm signals the batch step on scancel / time limit: pass it on, then still write the footer.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    code = shell_code(proc.wait())
    out.write(log_footer(code, time.monotonic() - start, threads or 1))
    out.flush()
    return code


def _task_main(argv: Sequence[str]) -> int:
    """Slurm task wrapper: stdout is the task's log (sbatch --output); substitute the task id and run."""
    ap = argparse.ArgumentParser(prog="python -m etser.launch.jobs task")
    ap.add_argument("--var", default=None, help="job variable (JOB); absent: a single job")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("command", help="command line, JOB not yet substituted")
    a = ap.parse_args(argv)
    command = a.command
    if a.var is not None:
        task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task_id is None:
            print("etser.launch.jobs task: SLURM_ARRAY_TASK_ID is not set", file=sys.stderr)
            return 2
        command = substitute(command, a.var, int(task_id))
    return run_task(command, sys.stdout, a.threads)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "task":
        sys.exit(_task_main(sys.argv[2:]))
    print("usage: python -m etser.launch.jobs task [--var JOB] [--threads T] 'command'", file=sys.stderr)
    sys.exit(2)

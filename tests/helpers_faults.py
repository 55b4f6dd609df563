"""Running the shell recipe end to end in a scratch working directory, for the fault and bad-input tests.

A working directory is laid out like egs/emotiontalk/: symlinks to run.sh, path.sh, cmd.sh, conf/, local/,
utils/ of this checkout, outputs (data/, dump/, exp/) beside them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINKS = ("run.sh", "path.sh", "cmd.sh", "conf", "local", "utils")

# Small and quick but still the whole recipe: 10 utterances per group (150), fbank without per-utterance
# CMVN (its pooled statistics are informative), 2 jobs, one task, one seed.
MINI_SCALE = 0.25
FAST = ("--upstream", "fbank_no_cmvn", "--nj", "2", "--tasks", "speech_four", "--seeds", "1")


def make_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in LINKS:
        (path / name).symlink_to(ROOT / name)
    return path


def recipe_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("cmd_backend", None)
    env.update(extra)
    return env


def run_recipe(workdir: Path, *args: str, env: dict | None = None, timeout: float = 900) \
        -> subprocess.CompletedProcess:
    return subprocess.run(["./run.sh", *map(str, args)], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env or recipe_env())


def start_recipe(workdir: Path, *args: str, env: dict | None = None, log_name: str = "run.out") \
        -> subprocess.Popen:
    """run.sh in its own process group (as a batch job or a terminal session has), output to a file."""
    out = open(workdir / log_name, "w")
    return subprocess.Popen(["./run.sh", *map(str, args)], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                            text=True, env=env or recipe_env(), start_new_session=True)


def _group_alive(pgid: int) -> list[int]:
    """Processes of a process group that are not yet dead (zombies count as dead)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def kill_run(proc: subprocess.Popen) -> None:
    """kill -9 of the run and everything it started (a pre-empted job, a killed terminal), and wait until all
    of it is gone: a job still dying (busy disk) holds the run lock, and a rerun would rightly refuse."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(proc.pid), f"processes of the killed run still alive: {_group_alive(proc.pid)}"


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300,
               poll: float = 0.02) -> None:
    """Poll cond() until true; fail if the run ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            kill_run(proc)
            pytest.fail(f"timeout waiting for {what}")
        time.sleep(poll)


def digest(top: Path, skip: Callable[[Path], bool] = lambda p: False, workdirs: tuple[Path, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under top (logs and other skipped paths left out). The absolute
    path of each of workdirs is read as "<workdir>" (scp files hold absolute ark paths), so the outputs of two
    working dirs (or a dump copied from another) compare equal when they are the same."""
    out = {}
    if not top.exists():
        return out
    prefixes = [str(Path(d).resolve()).encode() for d in workdirs]
    for p in sorted(top.rglob("*")):
        rel = p.relative_to(top)
        if p.is_file() and not skip(rel):
            data = p.read_bytes()
            for prefix in prefixes:
                data = data.replace(prefix, b"<workdir>")
            out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


def stamps(top: Path) -> dict[str, int]:
    """relative path -> mtime_ns of every file under top: shows whether anything was rewritten."""
    return {str(p.relative_to(top)): p.stat().st_mtime_ns for p in sorted(top.rglob("*")) if p.is_file()}


def is_log(rel: Path) -> bool:
    return "log" in rel.parts or rel.suffix == ".log"


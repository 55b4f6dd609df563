#!/usr/bin/env python3
"""Run jobs on a Slurm cluster with the interface of Kaldi's slurm.pl (and of utils/run.py).

    utils/slurm.py [options] JOB=1:N log/x.JOB.log command args ... JOB ...
    utils/slurm.py [options] log/x.log command ...                       # one job

Submits one ``sbatch`` array job (``--array=1-N%max_jobs_run``) and waits for it, polling ``squeue``.
Task i runs ``bash -c <command with JOB=i>`` in the submitting directory with the submitting environment
(``sbatch --export=ALL`` in conf/slurm.conf); its output, and Slurm's own messages about it (time limit,
cancellation), go to its log, which starts with the command line and ends with ``# Ended (code C) ...``
as utils/run.py writes it.  Exits 0 when every task succeeded, otherwise 1 naming how many and which tasks
failed and their logs.  Ctrl-C / SIGTERM cancels the job (scancel).  A job still running from an earlier,
killed launcher that writes the same logs is cancelled before the new one is submitted.

Options (``--name value``, ``--name=value``, dashes or underscores):
  --config FILE      sbatch flags for the options below (default: conf/slurm.conf, else built-in rules)
  --num_threads T    CPUs per task;  --mem M  memory per task (4G);  --gpu G  GPUs per task;
  --time T           time limit;     --partition P
  --max_jobs_run K   at most K tasks at once (the %K of --array)

    utils/slurm.py flags [options]      # print the sbatch command the config gives for these options

Environment: ETSER_SLURM_POLL_MAX (seconds between squeue polls at most, default 10),
ETSER_SLURM_LOG_WAIT (seconds to wait for a finished task's log on a shared filesystem, default 30).
See docs/slurm.md for the conf/slurm.conf grammar.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from etser.launch.jobs import (exit_code_in_log, failure_message, int_option, parse_launcher_args,  # noqa: E402
                        substitute)

PROG = "slurm.py"

# Used when neither --config nor conf/slurm.conf exists: the same rules as the shipped conf/slurm.conf.
DEFAULT_CONFIG = """\
command sbatch --export=ALL --ntasks=1
option num_threads=* --cpus-per-task=$0
option mem=* --mem=$0
option gpu=0
option gpu=* --gres=gpu:$0
option time=* --time=$0
option partition=* --partition=$0
default num_threads=1
default gpu=0
"""

# Launcher options the config maps to sbatch flags (max_jobs_run and config are the launcher's own).
CONFIG_OPTIONS = ("num_threads", "mem", "gpu", "time", "partition")
FINAL_FAILURES = {"CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                  "DEADLINE"}


class ConfigError(ValueError):
    pass


class SlurmConfig:
    """conf/slurm.conf: ``command ...``, ``option name=value [flags]``, ``option name=* flags $0``,
    ``default name=value``; ``#`` starts a comment."""

    def __init__(self, text: str, source: str = "<built-in>"):
        self.source = source
        self.command: list[str] | None = None
        self.exact: dict[tuple[str, str], list[str]] = {}
        self.wildcard: dict[str, list[str]] = {}
        self.defaults: dict[str, str] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            where = f"{source}:{lineno}"
            try:
                words = shlex.split(raw, comments=True)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if not words:
                continue
            kind, rest = words[0], words[1:]
            if kind == "command":
                if not rest:
                    raise ConfigError(f"{where}: 'command' needs the submit program, e.g. 'command sbatch'")
                self.command = rest
                continue
            if kind not in ("option", "default") or not rest or "=" not in rest[0]:
                raise ConfigError(f"{where}: expected 'command ...', 'option name=value [flags]' or "
                                  f"'default name=value', got {raw.strip()!r}")
            name, _, value = rest[0].partition("=")
            if name not in CONFIG_OPTIONS:
                raise ConfigError(f"{where}: unknown option name {name!r} (known: {', '.join(CONFIG_OPTIONS)})")
            if kind == "default":
                if len(rest) != 1 or value in ("", "*"):
                    raise ConfigError(f"{where}: 'default' takes one name=value, got {raw.strip()!r}")
                self.defaults[name] = value
            elif value == "*":
                self.wildcard[name] = rest[1:]
            else:
                self.exact[(name, value)] = rest[1:]
        if self.command is None:
            raise ConfigError(f"{source}: no 'command' line (e.g. 'command sbatch --export=ALL')")

    @classmethod
    def load(cls, path: str | None) -> "SlurmConfig":
        if path is None:
            path = "conf/slurm.conf" if Path("conf/slurm.conf").is_file() else None
        if path is None:
            return cls(DEFAULT_CONFIG)
        try:
            return cls(Path(path).read_text(encoding="utf-8"), path)
        except OSError as e:
            raise ConfigError(f"cannot read Slurm config {path}: {e}") from None

    def flags(self, options: dict[str, str]) -> list[str]:
        """The sbatch command with the flags for the given (and default) option values."""
        out = list(self.command)
        for name in CONFIG_OPTIONS:
            value = options.get(name, self.defaults.get(name))
            if value is None:
                continue
            if (name, value) in self.exact:
                out += self.exact[(name, value)]
            elif name in self.wildcard:
                out += [w.replace("$0", value) for w in self.wildcard[name]]
            else:
                raise ConfigError(f"{self.source} has no rule for --{name} {value} "
                                  f"(add a line 'option {name}=* <sbatch flags using $0>')")
        return out


def output_pattern(log: str, var: str | None) -> str:
    """The log path as an sbatch --output pattern: % escaped, JOB -> %a (the array index)."""
    pattern = os.path.abspath(log).replace("%", "%%")
    return substitute(pattern, var, "%a") if var else pattern


def job_name(log: str, var: str | None) -> str:
    name = os.path.basename(log)
    if var:
        name = substitute(name, var, "")
    name = re.sub(r"\.log$", "", name).strip("._-")
    return re.sub(r"[^\w.-]+", "_", name) or "job"


def squeue_states(job_id: str) -> list[str] | None:
    """States of the job's tasks still known to squeue ([] when none is pending or running);
    None when squeue could not be asked (controller unreachable)."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return [] if "Invalid job id" in r.stderr else None
    return r.stdout.split()


def task_states(job_id: str) -> dict[int, str]:
    """Final state of each array task while the controller remembers it (MinJobAge), {} otherwise."""
    try:
        r = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in r.stdout.splitlines():
        task = re.search(r"\bArrayTaskId=(\d+)\b", line)
        state = re.search(r"\bJobState=(\S+)", line)
        if state:
            states[int(task.group(1)) if task else 0] = state.group(1)
    return states


def cancel_stale(id_file: Path) -> None:
    """Cancel a job an earlier (killed) launcher submitted for the same logs, and wait until it is gone."""
    try:
        old = id_file.read_text().strip()
    except OSError:
        return
    if not old or not squeue_states(old):
        return
    print(f"{PROG}: cancelling job {old}, left running by an earlier launcher writing the same logs",
          file=sys.stderr)
    subprocess.run(["scancel", old], check=False)
    deadline = time.monotonic() + 120
    while squeue_states(old) and time.monotonic() < deadline:
        time.sleep(1)


def wait_for(job_id: str) -> None:
    poll_max = float(os.environ.get("ETSER_SLURM_POLL_MAX", "10"))
    delay, unreachable_since = 0.5, None
    while True:
        states = squeue_states(job_id)
        if states is None:
            # a busy or restarting controller: keep asking, but not forever
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > 900:
                raise RuntimeError(f"squeue has not answered for 15 minutes; job {job_id} may still run")
        else:
            unreachable_since = None
            if not states:
                return
        time.sleep(delay)
        delay = min(poll_max, delay * 1.5)


def print_flags(argv: list[str]) -> int:
    """``slurm.py flags [options]``: print the sbatch command (shell-quoted) that the config gives for
    the options, for scripts that submit by themselves (utils/submit_pipeline.sh)."""
    try:
        a = parse_launcher_args(argv + ["-", "-"], PROG)
        print(shlex.join(SlurmConfig.load(a.options.get("config")).flags(a.options)))
    except ValueError as e:
        print(f"{PROG}: {e}" if not str(e).startswith(PROG) else e, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv else 1
    if argv[0] == "flags":
        return print_flags(argv[1:])
    try:
        a = parse_launcher_args(argv, PROG)
        max_jobs = int_option(a.options, "max_jobs_run", None)
        threads = int_option(a.options, "num_threads", None)
        config = SlurmConfig.load(a.options.get("config"))
        sbatch = config.flags(a.options)
    except ValueError as e:
        print(f"{PROG}: {e}" if not str(e).startswith(PROG) else e, file=sys.stderr)
        return 2
    if shutil.which(sbatch[0]) is None:
        print(f"{PROG}: {sbatch[0]} not found: no Slurm client here (use cmd_backend=local to run jobs on "
              f"this machine)", file=sys.stderr)
        return 1

    var = a.spec.var if a.spec else None
    indices = list(a.spec.indices) if a.spec else [0]
    logs = {i: substitute(a.log, var, i) if var else a.log for i in indices}
    name = job_name(a.log, var)
    qdir = Path(logs[indices[0]]).parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    id_file = qdir / f"{name}.slurm_job_id"
    # first: a stale job's tasks still starting would append to the logs emptied below
    cancel_stale(id_file)
    for path in logs.values():
        # tasks append to their log (Slurm and the task wrapper both write it): start each one empty
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).unlink(missing_ok=True)

    wrapper = [sys.executable, "-m", "etser.launch.jobs", "task"]
    if var:
        wrapper += ["--var", var]
    if threads is not None:
        wrapper += ["--threads", str(threads)]
    wrap = (f"PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} exec "
            + shlex.join(wrapper + [a.command]))
    submit = sbatch + [f"--job-name={name}", f"--chdir={os.getcwd()}",
                       f"--output={output_pattern(a.log, var)}", "--open-mode=append", "--parsable"]
    if a.spec:
        submit.append(f"--array={a.spec.first}-{a.spec.last}" + (f"%{max_jobs}" if max_jobs else ""))
    submit += ["--wrap", wrap]
    r = subprocess.run(submit, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{PROG}: sbatch failed (exit {r.returncode}): {r.stderr.strip()}\n  command: "
              f"{shlex.join(submit)}", file=sys.stderr)
        return 1
    job_id = r.stdout.strip().split(";")[0]
    id_file.write_text(job_id + "\n")
    t0 = time.monotonic()

    def on_signal(signum, _frame):
        subprocess.run(["scancel", job_id], check=False)
        print(f"{PROG}: signal {signum}: cancelled job {job_id}", file=sys.stderr)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        wait_for(job_id)
    except RuntimeError as e:
        print(f"{PROG}: {e}; logs: {a.log}", file=sys.stderr)
        return 1

    # Each task's code is in its log footer; a task Slurm killed before the footer has none.
    codes = {i: exit_code_in_log(logs[i]) for i in indices}
    states = task_states(job_id) if any(c != 0 for c in codes.values()) else {}
    log_wait = float(os.environ.get("ETSER_SLURM_LOG_WAIT", "30"))
    deadline = time.monotonic() + log_wait
    for i in indices:
        # a finished task's log, or its footer, may show up late on a shared filesystem (a client that saw the
        # log unlinked above may go on seeing no file for its attribute-cache time)
        while codes[i] is None and states.get(i) not in FINAL_FAILURES and time.monotonic() < deadline:
            time.sleep(0.5)
            codes[i] = exit_code_in_log(logs[i])
    failed = [i for i in indices if codes[i] != 0]
    id_file.unlink(missing_ok=True)
    if failed:
        reasons = []
        for i in failed:
            if codes[i] is not None:
                reasons.append(f"exit code {codes[i]}" + (f", {states[i]}" if i in states else ""))
            else:
                reasons.append(f"no exit code in the log, Slurm state {states.get(i, 'unknown')}")
        print(failure_message(PROG, failed, len(indices), [logs[i] for i in failed], reasons, noun="task")
              + f"\n  Slurm job {job_id}; scontrol show job {job_id} tells more while the controller "
                f"remembers it", file=sys.stderr)
        return 1
    print(f"{PROG}: job {job_id}: {len(indices)} task{'s' if len(indices) > 1 else ''} done in "
          f"{time.monotonic() - t0:.1f} s; logs: {substitute(a.log, var, '*') if var else a.log}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""utils/run.py, the local launcher with Kaldi's run.pl interface, and the shared etser.launch.jobs logic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etser.launch.jobs import exit_code_in_log, parse_job_spec, shell_join, substitute

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "utils" / "run.py"


def launch(args, cwd, **kw):
    return subprocess.run([sys.executable, str(RUN), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, **kw)


# ---- etser.launch.jobs ----

def test_parse_job_spec():
    assert parse_job_spec("JOB=1:4").indices == range(1, 5)
    spec = parse_job_spec("SPK=3")
    assert (spec.var, spec.first, spec.last) == ("SPK", 3, 3)
    assert parse_job_spec("log/x.log") is None
    assert parse_job_spec("--foo=1") is None
    for bad in ("JOB=1:", "JOB=0:3", "JOB=4:2", "JOB=:3"):
        with pytest.raises(ValueError, match="bad job spec"):
            parse_job_spec(bad)


def test_shell_join_quotes_only_words_with_whitespace():
    assert shell_join(["prog", "ark:-", "|", "wc", "-l"]) == "prog ark:- | wc -l"
    assert shell_join(["cat", "my file.txt"]) == "cat 'my file.txt'"
    assert shell_join(["echo", "it's a b"]) == "echo 'it'\"'\"'s a b'"
    assert shell_join(["a | b && c"]) == "a | b && c"  # one word: a shell command line
    assert substitute("x.JOB.ark --part JOB feats_JOB/JOB", "JOB", 7) == "x.7.ark --part 7 feats_7/7"
    # a longer upper-case name keeps its JOB (Kaldi's run.pl would turn these into SLURM_ARRAY_7_ID)
    assert substitute("$SLURM_ARRAY_JOB_ID JOBS MYJOB JOB2", "JOB", 7) == "$SLURM_ARRAY_JOB_ID JOBS MYJOB JOB2"


# ---- utils/run.py ----

def test_parallel_jobs_write_one_log_each(tmp_path):
    r = launch(["JOB=1:3", "log/x.JOB.log", "echo", "part", "JOB", ">", "out.JOB.txt", ";", "echo", "to-log",
                "JOB"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 jobs done" in r.stderr
    for i in (1, 2, 3):
        assert (tmp_path / f"out.{i}.txt").read_text() == f"part {i}\n"
        lines = (tmp_path / "log" / f"x.{i}.log").read_text().splitlines()
        assert lines[0] == f"# echo part {i} > out.{i}.txt ; echo to-log {i}"
        assert lines[1].startswith("# Started at ")
        assert f"to-log {i}" in lines
        assert lines[-2].startswith("# Accounting: time=")
        assert lines[-1].startswith("# Ended (code 0) at ") and "elapsed time" in lines[-1]
        assert exit_code_in_log(tmp_path / "log" / f"x.{i}.log") == 0


def _overlap(stamps: Path) -> int:
    """Most jobs running at the same moment, from 'start t' / 'end t' lines."""
    events = []
    for line in stamps.read_text().splitlines():
        kind, t = line.split()
        events.append((float(t), 0 if kind == "end" else 1))
    most = now = 0
    for _, start in sorted(events):
        now += 1 if start else -1
        most = max(most, now)
    return most


@pytest.mark.parametrize("limit", [1, 2])
def test_max_jobs_run_limits_concurrency(tmp_path, limit):
    stamp = "date +%s.%N"
    job = f"echo start $({stamp}) >> stamps; sleep 0.4; echo end $({stamp}) >> stamps"
    r = launch(["--max_jobs_run", limit, "JOB=1:4", "log/s.JOB.log", job], tmp_path)
    assert r.returncode == 0, r.stderr
    assert _overlap(tmp_path / "stamps") == limit


def test_failures_name_count_jobs_and_logs(tmp_path):
    job = "echo working on JOB; if [ JOB = 2 ] || [ JOB = 4 ]; then echo 'broken part JOB' >&2; exit 3; fi"
    r = launch(["--max-jobs-run", "2", "JOB=1:5", "log/f.JOB.log", job], tmp_path)
    assert r.returncode == 1
    assert "run.py: 2 / 5 jobs failed (2 4)" in r.stderr
    assert "log: log/f.2.log" in r.stderr and "log: log/f.4.log" in r.stderr
    assert "broken part 2" in r.stderr  # the end of the first failed log is shown
    # the other jobs still ran
    for i, code in zip(range(1, 6), (0, 3, 0, 3, 0)):
        assert exit_code_in_log(tmp_path / f"log/f.{i}.log") == code


def test_single_job_without_spec_and_single_index(tmp_path):
    r = launch(["log/one.log", "exit 5"], tmp_path)
    assert r.returncode == 1
    assert "run.py: job failed" in r.stderr and "log: log/one.log" in r.stderr
    assert exit_code_in_log(tmp_path / "log/one.log") == 5

    r = launch(["JOB=3", "log/only.JOB.log", "echo", "JOB"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "log").glob("only.*")) == ["only.3.log"]


def test_paths_with_spaces(tmp_path):
    (tmp_path / "in dir").mkdir()
    (tmp_path / "in dir" / "a 1.txt").write_text("one\n")
    r = launch(["JOB=1:1", "log dir/c.JOB.log", "cat", "in dir/a JOB.txt"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "one" in (tmp_path / "log dir" / "c.1.log").read_text()


def test_num_threads_reaches_the_job_and_slurm_options_are_accepted(tmp_path):
    r = launch(["--num_threads", "3", "--gpu", "1", "--mem", "4G", "--time", "1:00:00", "--partition", "x",
                "JOB=1:2", "log/t.JOB.log", "echo threads=$OMP_NUM_THREADS"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threads=3" in (tmp_path / "log/t.1.log").read_text()
    assert "threads=3" in (tmp_path / "log/t.1.log").read_text().splitlines()[-2]


@pytest.mark.parametrize("args, message", [
    (["JOB=1:3", "log/x.log", "true"], "would share one log"),
    (["JOB=2:1", "log/x.JOB.log", "true"], "bad job spec"),
    (["--bogus", "1", "log/x.log", "true"], "unknown option --bogus"),
    (["--max_jobs_run", "two", "log/x.log", "true"], "--max_jobs_run wants an integer"),
    (["log/x.log"], "usage:"),
])
def test_bad_command_lines(tmp_path, args, message):
    r = launch(args, tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_sigterm_stops_the_jobs_and_closes_their_logs(tmp_path):
    p = subprocess.Popen([sys.executable, str(RUN), "--max_jobs_run", "2", "JOB=1:3", "log/k.JOB.log",
                          "sleep", "30"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "log/k.2.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM
    assert "interrupted by signal 15; 1 of 3 jobs not started" in err
    assert exit_code_in_log(tmp_path / "log/k.1.log") == 128 + signal.SIGTERM
    assert not (tmp_path / "log/k.3.log").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie nobody reaps (PID 1 in a container) is dead too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_jobs_die_with_a_killed_launcher(tmp_path):
    """kill -9 of run.py alone (not its process group) must not leave its jobs running unowned."""
    p = subprocess.Popen([sys.executable, str(RUN), "log/orphan.log", "echo $$ > pid; exec sleep 30"],
                         cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    job = int((tmp_path / "pid").read_text())
    assert _alive(job)
    p.kill()
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(job)


def test_works_through_the_egs_symlink(tmp_path):
    via_egs = ROOT / "egs" / "emotiontalk" / "utils" / "run.py"
    r = subprocess.run([sys.executable, str(via_egs), "JOB=1:2", "log/e.JOB.log", "true"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---- one GPU per local job (--gpu G) ----

def _fake_nvidia_smi(bin_dir: Path, gpus: int | None) -> dict[str, str]:
    """An environment whose ``nvidia-smi -L`` lists ``gpus`` GPUs (None: fails, as without a driver)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    if gpus is None:
        script.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    else:
        lines = "".join(f"echo 'GPU {i}: NVIDIA H200 (UUID: GPU-{i:04d})'\n" for i in range(gpus))
        script.write_text("#!/bin/sh\n" + lines + "echo '  MIG 1g.18gb Device 0: (UUID: MIG-x)'\n")
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def _job_devices(tmp_path: Path, n: int) -> list[str]:
    return [(tmp_path / f"dev.{i}").read_text().strip() for i in range(1, n + 1)]


@pytest.mark.parametrize("visible, gpus, per_job, want", [
    ("3,5", None, 1, ["3", "5", "3", "5", "3"]),     # the parent's list, round robin
    ("GPU-aa, GPU-bb", 4, 1, ["GPU-aa", "GPU-bb"] * 2 + ["GPU-aa"]),  # UUIDs kept; the list wins over nvidia-smi
    (None, 3, 1, ["0", "1", "2", "0", "1"]),          # nvidia-smi -L counts the GPUs (MIG lines are not GPUs)
    (None, None, 2, ["0,1"] * 5),                     # neither: 0..G-1
    (None, 4, 2, ["0,1", "2,3", "0,1", "2,3", "0,1"]),
    ("7", None, 2, ["7"] * 5),                        # more GPUs per job than visible: all of them, once
])
def test_each_local_job_gets_its_own_gpus(tmp_path, visible, gpus, per_job, want):
    env = _fake_nvidia_smi(tmp_path / "bin", gpus)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    r = launch(["--gpu", per_job, "--max_jobs_run", 2, "JOB=1:5", "log/g.JOB.log",
                'echo "$CUDA_VISIBLE_DEVICES" > dev.JOB'], tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert _job_devices(tmp_path, 5) == want
    log = (tmp_path / "log" / "g.2.log").read_text().splitlines()
    assert log[3] == f"# CUDA_VISIBLE_DEVICES={want[1]}"


def test_without_gpu_option_the_environment_is_left_alone(tmp_path):
    env = _fake_nvidia_smi(tmp_path / "bin", 4)
    env["CUDA_VISIBLE_DEVICES"] = "2"
    r = launch(["--gpu", 0, "JOB=1:2", "log/g.JOB.log", 'echo "${CUDA_VISIBLE_DEVICES-unset}" > dev.JOB'],
               tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert _job_devices(tmp_path, 2) == ["2", "2"]
    env.pop("CUDA_VISIBLE_DEVICES")
    r = launch(["JOB=1:2", "log/g.JOB.log", 'echo "${CUDA_VISIBLE_DEVICES-unset}" > dev.JOB'], tmp_path, env=env)
    assert _job_devices(tmp_path, 2) == ["unset", "unset"]


def test_job_spec_subrange_keeps_the_round_robin_of_its_jobs(tmp_path):
    env = _fake_nvidia_smi(tmp_path / "bin", 2)
    r = launch(["--gpu", 1, "JOB=3:4", "log/g.JOB.log", 'echo "$CUDA_VISIBLE_DEVICES" > dev.JOB'], tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert [(tmp_path / f"dev.{i}").read_text().strip() for i in (3, 4)] == ["0", "1"]

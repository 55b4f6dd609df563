"""utils/slurm.py against a live Slurm (tests marked `live` skip without one, fail under ETSER_REQUIRE_SLURM=1),
its conf/slurm.conf grammar, and cmd.sh's backend choice."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etser.launch.jobs import exit_code_in_log
from tests.helpers_faults import make_workdir, recipe_env
from tests.helpers_slurm import require_slurm

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "utils" / "slurm.py"

_spec = importlib.util.spec_from_file_location("slurm_launcher", SLURM)
slurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slurm)


@pytest.fixture
def live():
    require_slurm()


def submit(args, cwd, env=None, timeout=180):
    return subprocess.run([sys.executable, str(SLURM), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def squeue(job_id: str) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return r.stdout.split()


# ---- conf/slurm.conf grammar (no cluster needed) ----

def test_shipped_config_maps_options_to_sbatch_flags():
    conf = slurm.SlurmConfig.load(str(ROOT / "conf" / "slurm.conf"))
    assert conf.flags({}) == ["sbatch", "--export=ALL", "--ntasks=1", "--cpus-per-task=1"]
    assert conf.flags({"gpu": "0", "num_threads": "4", "mem": "8G", "time": "2:00:00", "partition": "p"}) == [
        "sbatch", "--export=ALL", "--ntasks=1", "--cpus-per-task=4", "--mem=8G", "--time=2:00:00",
        "--partition=p"]
    assert conf.flags({"gpu": "2"})[-1] == "--gres=gpu:2"
    # the built-in rules (no config file) are the shipped ones
    assert slurm.SlurmConfig(slurm.DEFAULT_CONFIG).flags({"gpu": "1", "mem": "1G"}) == conf.flags(
        {"gpu": "1", "mem": "1G"})


def test_config_exact_value_beats_wildcard_and_defaults_apply():
    conf = slurm.SlurmConfig("command sbatch -A acct  # comment\n"
                             "option gpu=0 -p cpu\noption gpu=* -p gpu --gres=gpu:$0\n"
                             "option mem=* --mem-per-cpu=$0\ndefault gpu=0\n", "x.conf")
    assert conf.flags({}) == ["sbatch", "-A", "acct", "-p", "cpu"]
    assert conf.flags({"gpu": "2", "mem": "2G"}) == ["sbatch", "-A", "acct", "--mem-per-cpu=2G", "-p", "gpu",
                                                     "--gres=gpu:2"]


@pytest.mark.parametrize("text, message", [
    ("option gpu=* --gres=gpu:$0\n", "x.conf: no 'command' line"),
    ("command sbatch\nqueue foo\n", "x.conf:2: expected 'command ...'"),
    ("command sbatch\noption color=* --c=$0\n", "x.conf:2: unknown option name 'color'"),
    ("command sbatch\ndefault gpu=*\n", "x.conf:2: 'default' takes one name=value"),
    ("command sbatch 'unclosed\n", "x.conf:1: No closing quotation"),
])
def test_bad_config_lines_are_named(text, message):
    with pytest.raises(slurm.ConfigError, match=message):
        slurm.SlurmConfig(text, "x.conf")


def test_option_without_rule_is_an_error(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch\n")
    r = submit(["--config", conf, "--mem", "4G", "log/x.log", "true"], tmp_path)
    assert r.returncode == 2
    assert f"{conf} has no rule for --mem 4G (add a line 'option mem=* <sbatch flags using $0>')" in r.stderr


def test_output_pattern_escapes_percent_and_maps_job_to_array_index():
    assert slurm.output_pattern("/a/b%c/x.JOB.log", "JOB") == "/a/b%%c/x.%a.log"
    assert slurm.output_pattern("/a/x.log", None) == "/a/x.log"
    assert slurm.job_name("exp/log/extract.JOB.log", "JOB") == "extract"
    assert slurm.job_name("exp/log/train seed1.log", None) == "train_seed1"


def test_cmd_sh_selects_the_backend(tmp_path):
    def source(backend, ngpu=""):
        script = f"cd {ROOT} && {ngpu} cmd_backend={backend} . ./cmd.sh && echo \"$train_cmd|$cuda_cmd\""
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    assert source("local").stdout.strip() == "utils/run.py|utils/run.py --gpu 1"
    assert source("slurm", "ngpu=0").stdout.strip() == (
        "utils/slurm.py --config conf/slurm.conf|utils/slurm.py --config conf/slurm.conf --gpu 0")
    bad = source("pbs")
    assert bad.returncode != 0 and "unknown cmd_backend 'pbs' (local or slurm)" in bad.stderr


def test_missing_sbatch_is_explained(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("command no-such-sbatch-here\n")
    r = submit(["--config", conf, "log/x.log", "true"], tmp_path)
    assert r.returncode == 1
    assert "no-such-sbatch-here not found: no Slurm client here (use cmd_backend=local" in r.stderr


# ---- against the live cluster ----

def test_array_job_runs_every_task_in_the_submit_dir_with_its_environment(live, tmp_path):
    env = dict(os.environ, ETSER_TEST_TOKEN="tok-42")
    job = "echo task JOB of $SLURM_ARRAY_JOB_ID in $(pwd) with $ETSER_TEST_TOKEN > out.JOB.txt; echo logged JOB"
    r = submit(["--max_jobs_run", 2, "JOB=1:3", "log/a.JOB.log", job], tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "3 tasks done" in r.stderr
    job_id = r.stderr.split("job ")[1].split(":")[0]
    for i in (1, 2, 3):
        assert (tmp_path / f"out.{i}.txt").read_text() == f"task {i} of {job_id} in {tmp_path} with tok-42\n"
        lines = (tmp_path / f"log/a.{i}.log").read_text().splitlines()
        assert lines[0].startswith(f"# echo task {i} of $SLURM_ARRAY_JOB_ID")
        assert f"logged {i}" in lines
        assert lines[-1].startswith("# Ended (code 0) at ")
    # one array job, not three jobs: the controller knows it as ID_1..ID_3
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    assert sorted(int(x.split("ArrayTaskId=")[1].split()[0]) for x in shown.splitlines()) == [1, 2, 3]


def test_failed_tasks_are_named_with_their_logs(live, tmp_path):
    job = "echo working JOB; if [ JOB = 2 ]; then echo 'broken input in part JOB' >&2; exit 7; fi"
    r = submit(["JOB=1:3", "log d/f.JOB.log", job], tmp_path)
    assert r.returncode == 1
    assert "slurm.py: 1 / 3 tasks failed (2)" in r.stderr
    assert "log: log d/f.2.log [exit code 7" in r.stderr
    assert "broken input in part 2" in r.stderr
    assert exit_code_in_log(tmp_path / "log d/f.1.log") == 0
    assert exit_code_in_log(tmp_path / "log d/f.3.log") == 0


def test_single_job_and_single_index(live, tmp_path):
    r = submit(["--num_threads", 1, "log/one.log", "echo threads $OMP_NUM_THREADS"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threads 1" in (tmp_path / "log/one.log").read_text()
    r = submit(["JOB=2", "log/i.JOB.log", "exit 3"], tmp_path)
    assert r.returncode == 1
    assert "slurm.py: task 2 failed" in r.stderr and "log: log/i.2.log" in r.stderr
    assert not (tmp_path / "log/i.1.log").exists()


def test_max_jobs_run_one_runs_tasks_one_after_another(live, tmp_path):
    stamp = "date +%s.%N"
    job = f"echo start $({stamp}) >> stamps; sleep 1; echo end $({stamp}) >> stamps"
    r = submit(["--max_jobs_run", 1, "JOB=1:2", "log/s.JOB.log", job], tmp_path)
    assert r.returncode == 0, r.stderr
    times = {}
    for line in (tmp_path / "stamps").read_text().splitlines():
        kind, t = line.split()
        times.setdefault(kind, []).append(float(t))
    assert max(times["start"]) >= min(times["end"])


def test_task_cancelled_by_slurm_fails_the_job(live, tmp_path):
    job = "if [ JOB = 2 ]; then scancel ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}; sleep 60; fi; echo ok JOB"
    r = submit(["JOB=1:2", "log/c.JOB.log", job], tmp_path)
    assert r.returncode == 1
    assert "slurm.py: 1 / 2 tasks failed (2)" in r.stderr
    assert "CANCELLED" in r.stderr  # Slurm's own message lands in the task's log, and the state is named
    assert "ok 1" in (tmp_path / "log/c.1.log").read_text()


def test_sbatch_rejection_is_reported(live, tmp_path):
    r = submit(["--partition", "no_such_partition", "log/x.log", "true"], tmp_path)
    assert r.returncode == 1
    assert "slurm.py: sbatch failed" in r.stderr and "no_such_partition" in r.stderr


def _started_job(proc, tmp_path, log_name):
    """Job id of a running launcher, once its task has started."""
    deadline = time.monotonic() + 60
    id_file = tmp_path / "log" / "q" / f"{log_name}.slurm_job_id"
    while time.monotonic() < deadline:
        if id_file.exists() and (tmp_path / "started").exists():
            return id_file.read_text().strip()
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError("job did not start within 60 s")


def test_interrupting_the_launcher_cancels_the_job(live, tmp_path):
    p = subprocess.Popen([sys.executable, str(SLURM), "log/w.log", "touch started; sleep 120"], cwd=tmp_path,
                         stderr=subprocess.PIPE, text=True)
    job_id = _started_job(p, tmp_path, "w")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT
    assert f"cancelled job {job_id}" in err
    deadline = time.monotonic() + 30
    while squeue(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert squeue(job_id) == []


def test_job_left_by_a_killed_launcher_is_cancelled_before_resubmitting(live, tmp_path):
    p = subprocess.Popen([sys.executable, str(SLURM), "log/r.log", "touch started; sleep 120"], cwd=tmp_path,
                         stderr=subprocess.PIPE, text=True)
    old = _started_job(p, tmp_path, "r")
    p.kill()  # kill -9: no chance to scancel, the job runs on
    p.wait()
    assert squeue(old)
    r = submit(["log/r.log", "echo second run"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"cancelling job {old}, left running by an earlier launcher writing the same logs" in r.stderr
    assert squeue(old) == []
    assert "second run" in (tmp_path / "log/r.log").read_text()


def test_without_slurm_tests_skip_locally_and_fail_in_ci(monkeypatch):
    from tests import helpers_slurm
    monkeypatch.setattr(helpers_slurm.shutil, "which", lambda name: None)
    monkeypatch.delenv("ETSER_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no live Slurm: sbatch not found"):
        helpers_slurm.require_slurm()
    monkeypatch.setenv("ETSER_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="ETSER_REQUIRE_SLURM=1 but sbatch not found"):
        helpers_slurm.require_slurm()


# ---- utils/submit_pipeline.sh: run.sh itself as one batch job ----

def _submit_pipeline(workdir, *args, timeout=300):
    return subprocess.run(["utils/submit_pipeline.sh", *map(str, args)], cwd=workdir, capture_output=True,
                          text=True, timeout=timeout, env=recipe_env())


def test_submit_pipeline_runs_run_sh_as_one_job_and_waits(live, tmp_path, small_release):
    w = make_workdir(tmp_path / "my work")
    r = _submit_pipeline(w, "--wait", "true", "--log", "exp/pipeline/p.%j.log", "--",
                         "--db_root", small_release, "--stop_stage", 1)
    assert r.returncode == 0, r.stderr
    job_id = re.search(r"job (\d+) finished; log: exp/pipeline/p\.(\d+)\.log", r.stderr)
    assert job_id and job_id.group(1) == job_id.group(2), r.stderr
    log = (w / f"exp/pipeline/p.{job_id.group(1)}.log").read_text()
    assert "Successfully finished stages 1-1" in log
    assert (w / "data/train/wav.scp").is_file()  # it ran in the submitting directory
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id.group(1)], capture_output=True,
                           text=True).stdout
    assert "JobName=etser_run" in shown and "JobState=COMPLETED" in shown


def test_submit_pipeline_returns_at_once_and_reports_failure_in_the_log(live, tmp_path):
    w = make_workdir(tmp_path / "work")
    r = _submit_pipeline(w, "--", "--stage", 3, "--stop_stage", 3)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert f"submitted job {job_id}; follow it with: tail -f exp/pipeline/run.{job_id}.log" in r.stderr
    deadline = time.monotonic() + 120
    while squeue(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "JobState=FAILED" in shown
    # an empty working dir: the run stops before any job, naming the stage that is missing
    assert "data/train not found: run stage 1 first" in (w / f"exp/pipeline/run.{job_id}.log").read_text()


def test_submit_pipeline_bad_options(tmp_path):
    w = make_workdir(tmp_path / "work")
    r = _submit_pipeline(w, "--queue", "x")
    assert r.returncode == 1 and "option --queue: unknown option" in r.stderr
    (tmp_path / "nosbatch.conf").write_text("command no-such-sbatch-here\n")
    r = _submit_pipeline(w, "--slurm_conf", tmp_path / "nosbatch.conf")
    assert r.returncode == 1 and "no-such-sbatch-here not found: no Slurm client here" in r.stderr

"""Fault tolerance of the whole recipe: kill -9 and resume, a failing job, two runs at once, and
stages that never touch other stages' finished outputs unless --overwrite true.

Each test drives ./run.sh in a scratch working directory on a quarter-size mini corpus (fbank_no_cmvn,
2 jobs, one task, one seed) and compares with one uninterrupted reference run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers_faults import (FAST, digest, is_log, kill_run, make_workdir, run_recipe,
                                  stamps, start_recipe, wait_until)
from tests.helpers_slurm import require_slurm

LAST = 4  # stages 1-4: data, features, training, scoring


def tag_dir(workdir: Path) -> Path:
    [d] = list((workdir / "dump").iterdir())
    return d


def metrics(workdir: Path) -> dict[str, dict]:
    """exp/.../decode_<set>/metrics.json by path."""
    out = {str(p.relative_to(workdir / "exp")): json.loads(p.read_text())
           for p in sorted((workdir / "exp").rglob("metrics.json"))}
    assert out, f"no metrics.json under {workdir / 'exp'}"
    return out


def features(workdir: Path, *copied_from: Path) -> dict[str, str]:
    """The dump's files; copied_from: working dirs whose dumps were copied here (their scp paths point there)."""
    d = digest(workdir / "dump", skip=is_log, workdirs=(workdir, *copied_from))
    assert any(k.endswith("pooled_mean.scp") for k in d), "no finished features"
    return d


def check(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"run.sh failed ({r.returncode}):\n{r.stderr[-4000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_release):
    """One uninterrupted run of stages 1..LAST: its features and metrics."""
    w = make_workdir(tmp_path_factory.mktemp("ref") / "work")
    check(run_recipe(w, "--db_root", small_release, "--stop_stage", LAST, *FAST))
    return {"dir": w, "features": features(w), "metrics": metrics(w)}


# ---- kill -9 and resume ----

def _first(pattern: str, workdir: Path):
    return lambda: any(workdir.glob(pattern))


STAGE2_POINTS = {
    # name: (what must exist when we kill, glob under the working directory)
    "jobs just started": "dump/*/train/log/extract.1.log",
    "one job finished": "dump/*/train/split2/done.*",
    "one set merged": "dump/*/train/pooled_mean.scp",
}


@pytest.mark.parametrize("point", list(STAGE2_POINTS))
def test_kill_during_stage2_then_resume(tmp_path, small_release, reference, point):
    w = make_workdir(tmp_path / "work")
    shutil.copytree(reference["dir"] / "data", w / "data")  # stage 1 as the reference made it
    data_before = digest(w / "data")
    p = start_recipe(w, "--stage", 2, "--stop_stage", LAST, *FAST)
    wait_until(_first(STAGE2_POINTS[point], w), p, point)
    kill_run(p)
    assert not (w / "exp").exists() or not any((w / "exp").rglob("metrics.json"))
    r = run_recipe(w, "--stage", 2, "--stop_stage", LAST, *FAST)
    check(r)
    assert features(w) == reference["features"]  # byte-identical
    assert metrics(w) == reference["metrics"]
    assert digest(w / "data") == data_before


STAGE3_POINTS = {
    "training just started": "exp/*/*/*/seed*/train.log",
    "after a checkpoint": "exp/*/*/*/seed*/checkpoints/*",
}


@pytest.mark.parametrize("point", list(STAGE3_POINTS))
def test_kill_during_stage3_then_resume(tmp_path, small_release, reference, point):
    w = make_workdir(tmp_path / "work")
    # stages 1-2 as the reference made them (scp paths are relative: the copy stands on its own)
    for d in ("data", "dump"):
        shutil.copytree(reference["dir"] / d, w / d, symlinks=True)
    before = digest(w / "dump")
    p = start_recipe(w, "--stage", 3, "--stop_stage", LAST, *FAST)
    wait_until(_first(STAGE3_POINTS[point], w), p, point)
    kill_run(p)
    check(run_recipe(w, "--stage", 2, "--stop_stage", LAST, *FAST))
    assert metrics(w) == reference["metrics"]
    assert digest(w / "dump") == before  # stage 2 found its outputs complete and left them alone


# ---- a failing job ----

@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_failed_job_stops_the_stage_and_names_its_log(tmp_path, reference, backend):
    if backend == "slurm":
        require_slurm()
    w = make_workdir(tmp_path / "work")
    shutil.copytree(reference["dir"] / "data", w / "data")
    wav_scp = w / "data/train/wav.scp"
    good = wav_scp.read_text()
    last = good.splitlines()[-1].split()[0]  # its utterance is in job 2 of 2
    broken = w / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    wav_scp.write_text("".join(f"{last} {broken}\n" if line.startswith(last + " ") else line + "\n"
                               for line in good.splitlines()))
    data_before, data_stamps = digest(w / "data"), stamps(w / "data")

    r = run_recipe(w, "--stage", 2, "--stop_stage", LAST, "--cmd_backend", backend, *FAST)
    assert r.returncode != 0
    tag = tag_dir(w).name
    noun = "jobs" if backend == "local" else "tasks"
    launcher = "run.py" if backend == "local" else "slurm.py"
    assert f"{launcher}: 1 / 2 {noun} failed (2)" in r.stderr
    log = f"dump/{tag}/train/log/extract.2.log"
    assert f"log: {log}" in r.stderr
    assert last in (w / log).read_text()  # the job's log names the utterance
    assert "Successfully finished" not in r.stderr
    # nothing after it ran: no later set, no training
    assert not (w / "dump" / tag / "val").exists()
    assert not (w / "dump" / tag / "train/pooled_mean.scp").exists()
    assert not any((w / "exp").glob(f"{tag}/**/train.log"))
    # stage 1's finished outputs are untouched
    assert digest(w / "data") == data_before and stamps(w / "data") == data_stamps
    assert (w / "dump" / tag / "train/split2/done.1").exists()  # the job that succeeded is kept

    # repaired input: the rerun redoes only the failed job
    wav_scp.write_text(good)
    check(run_recipe(w, "--stage", 2, "--stop_stage", 2, "--sets", "train", "--cmd_backend", backend, *FAST))
    assert "already done" in (w / f"dump/{tag}/train/log/extract.1.log").read_text()


# ---- two runs at once ----

def test_second_run_in_the_same_directory_refuses(tmp_path, small_release):
    w = make_workdir(tmp_path / "work")
    gate = tmp_path / "gate"
    gate.mkdir()
    # a python3 that waits at a gate in stage 1 (data_prep; the option checks before it run freely): the first
    # run holds still inside stage 1 until we let it go
    slow = tmp_path / "gated_python"
    slow.write_text(f"#!/usr/bin/env bash\ncase \"$*\" in *data_prep*) touch {gate}/entered\n"
                    f"while [ ! -e {gate}/open ]; do sleep 0.05; done ;; esac\nexec python3 \"$@\"\n")
    slow.chmod(0o755)
    first = start_recipe(w, "--db_root", small_release, "--stop_stage", 1, "--python", slow)
    wait_until(lambda: (gate / "entered").exists(), first, "the first run entered stage 1", timeout=120)

    second = run_recipe(w, "--db_root", small_release, "--stop_stage", 1)
    assert second.returncode == 1
    assert f"ERROR: another run.sh is already running in {w} (exp/.run.lock):" in second.stderr
    assert f"pid {first.pid} on " in second.stderr and "--python " + str(slow) in second.stderr
    assert "this one changes nothing" in second.stderr
    assert not (w / "data").exists()

    (gate / "open").touch()
    assert first.wait(timeout=300) == 0, (w / "run.out").read_text()[-3000:]
    assert "Successfully finished stages 1-1" in (w / "run.out").read_text()
    # the lock goes with the run that held it
    check(run_recipe(w, "--db_root", small_release, "--stop_stage", 1))


# ---- stages keep to their own outputs ----

def _area(rel: str) -> int | None:
    """Which stage owns a path under the working directory (None: not a stage output)."""
    parts = Path(rel).parts
    if parts[0] == "data":
        return 1
    if parts[0] == "dump":
        return 2
    if parts[0] == "exp":
        if parts[-1] == ".run.lock":
            return None
        if any(p.startswith("decode_") for p in parts) or parts[-1] == "score_jobs.txt" \
                or parts[-1].startswith("score."):
            return 4
        if parts[-1] == "train_jobs.txt":
            return 3
        if len(parts) == 2:  # exp/RESULTS.md and the like
            return 5
        return 3
    return None


def _changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _snapshot(w: Path) -> dict[str, int]:
    return {f"{top}/{k}": v for top in ("data", "dump", "exp") if (w / top).exists()
            for k, v in stamps(w / top).items()}


def test_stages_leave_other_stages_outputs_alone(tmp_path, small_release, reference):
    w = make_workdir(tmp_path / "work")
    for d in ("data", "dump", "exp"):
        shutil.copytree(reference["dir"] / d, w / d, symlinks=True)
    for stage in range(1, LAST + 1):
        before = _snapshot(w)
        args = ["--stage", stage, "--stop_stage", stage, *FAST]
        check(run_recipe(w, *args, *(["--db_root", small_release] if stage == 1 else [])))
        changed = _changed(before, _snapshot(w))
        touched = {_area(k) for k in changed} - {None}
        assert touched <= {stage}, f"stage {stage} changed outputs of stages {sorted(touched - {stage})}: " \
            + ", ".join(sorted(k for k in changed if _area(k) not in (stage, None)))
        if stage in (2, 3):  # finished work is skipped, not redone (its logs and job list are written anew)
            redone = sorted(k for k in changed if _area(k) is not None and not is_log(Path(k))
                            and not k.endswith("_jobs.txt"))
            assert not redone, f"stage {stage} rewrote finished outputs without --overwrite: {redone}"

    # asked to: stage 2 redoes its features (same bytes), and still touches nothing else
    before = _snapshot(w)
    feats = features(w, reference["dir"])
    check(run_recipe(w, "--stage", 2, "--stop_stage", 2, "--sets", "test", "--overwrite", "true", *FAST))
    changed = _changed(before, _snapshot(w))
    assert {_area(k) for k in changed} - {None} == {2}
    assert any(k.endswith("test/pooled_mean.scp") for k in changed)
    assert not any("/train/" in k or "/val/" in k for k in changed)
    assert features(w, reference["dir"]) == feats


def test_stage2_redoes_features_of_other_utterances_or_refuses(tmp_path, reference):
    """Stage 1 rerun on other data: the finished features no longer match data/. Stage 2 never skips them as up
    to date (training would fail later): --on_change refuse stops naming the change and deletes nothing; the
    default redoes the set, which then holds exactly what data/ holds."""
    w = make_workdir(tmp_path / "work")
    for d in ("data", "dump"):
        shutil.copytree(reference["dir"] / d, w / d, symlinks=True)
    wav_scp = w / "data" / "val" / "wav.scp"
    lines = wav_scp.read_text().splitlines(keepends=True)
    dropped = lines[0].split()[0]
    wav_scp.write_text("".join(lines[1:]))
    subprocess.run(["utils/fix_data_dir.sh", "--tables", "conf/data_tables", "data/val"], cwd=w, check=True, capture_output=True)
    before = features(w)
    r = run_recipe(w, "--stage", 2, "--stop_stage", 2, "--on_change", "refuse", *FAST)
    assert r.returncode != 0
    assert re.search(r"features \S+/val is out of date: inputs: the utterances changed", r.stderr), r.stderr
    assert "--on_change redo" in r.stderr
    assert features(w) == before  # nothing deleted or rewritten
    r = run_recipe(w, "--stage", 2, "--stop_stage", 2, *FAST)
    check(r)
    assert re.search(r"\S+/val: to be \(re\)extracted: inputs: the utterances changed", r.stderr), r.stderr
    assert re.search(r"\S+/train is complete and up to date, skipped", r.stderr), r.stderr
    scp = (tag_dir(w) / "val" / "pooled_mean.scp").read_text()
    assert dropped not in scp and len(scp.splitlines()) == len(lines) - 1
    after = features(w)
    assert {k: v for k, v in after.items() if "/val/" not in k} == {k: v for k, v in before.items() if "/val/" not in k}


# ---- Slurm backend: the whole mini recipe, and a kill during stage 2 ----

def test_slurm_backend_runs_the_recipe_like_local(tmp_path, small_release, reference):
    require_slurm()
    w = make_workdir(tmp_path / "work")
    p = start_recipe(w, "--db_root", small_release, "--stop_stage", LAST, "--cmd_backend", "slurm", *FAST)
    # kill -9 while the array job of the first set runs: the rerun cancels the orphaned job and finishes
    wait_until(_first("dump/*/train/log/q/*.slurm_job_id", w), p, "the first array job was submitted")
    kill_run(p)
    r = run_recipe(w, "--stage", 2, "--stop_stage", LAST, "--cmd_backend", "slurm", *FAST)
    check(r)
    # the controller knows the array jobs that did the work: one per set (extract), training and scoring
    names = []
    for job_id in re.findall(r"slurm\.py: job (\d+): \d+ tasks? done", r.stderr):
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
        names += re.findall(r"JobName=(\S+)", shown)
    assert {"extract", "train", "score"} <= set(names), r.stderr
    assert features(w) == reference["features"]
    assert metrics(w) == reference["metrics"]

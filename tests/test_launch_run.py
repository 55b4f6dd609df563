"""The one job runner (etser.launch.run) and the job-file header every planner command writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etser.launch import run
from etser.runtime import job_file_header, num_jobs, write_job_file

ROOT = Path(__file__).resolve().parents[1]

# A job module of the protocol: build_parser() and run_line(args, argv, cache); a line "fail" raises, the
# others append their word to a file (and count in the cache how many lines this process ran).
JOB_MODULE = '''
import argparse
from pathlib import Path


def build_parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("word")
    ap.add_argument("--out", type=Path, required=True)
    return ap


def run_line(args, argv, cache):
    cache["n"] = cache.get("n", 0) + 1
    if args.word == "fail":
        raise RuntimeError("this line fails")
    with open(args.out, "a") as f:
        f.write(f"{args.word} {cache['n']}\\n")
'''


@pytest.fixture
def job_module(tmp_path, monkeypatch):
    (tmp_path / "fake_job.py").write_text(JOB_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_job"


def test_job_file_header_round_trip_and_job_count(tmp_path):
    jobs = tmp_path / "jobs.txt"
    write_job_file(jobs, "etser.learn.score", 6, ["--sets val exp/a", "--sets val exp/b"])
    assert jobs.read_text() == "# module: etser.learn.score\n# runs_per_job: 6\n--sets val exp/a\n--sets val exp/b\n"
    assert job_file_header(jobs) == {"module": "etser.learn.score", "runs_per_job": 6}
    assert not (tmp_path / "jobs.txt.tmp").exists()
    # ceil(lines / runs_per_job) jobs, at most --nj
    assert [num_jobs(n, 6, 4) for n in (0, 1, 6, 7, 24, 25)] == [0, 1, 1, 2, 4, 4]
    assert [num_jobs(n, 1, 4) for n in (1, 3, 9)] == [1, 3, 4]
    (tmp_path / "old.txt").write_text("--sets val exp/a\n")   # a job file of the old format: refused, named
    with pytest.raises(ValueError, match=r"old.txt: no '# module: \.\.\.' header line"):
        job_file_header(tmp_path / "old.txt")
    (tmp_path / "bad.txt").write_text("# module: etser.learn.score\n# runs_per_job: 0\n")
    with pytest.raises(ValueError, match="runs_per_job: 0' is not a positive integer"):
        job_file_header(tmp_path / "bad.txt")


def test_runner_runs_its_share_goes_on_after_a_failure_and_names_it(tmp_path, job_module, caplog):
    out = tmp_path / "out.txt"
    jobs = tmp_path / "jobs.txt"
    write_job_file(jobs, job_module, 1, [f"{w} --out {out}" for w in ("a", "b", "fail", "d", "e")])
    # job 1 of 2: lines 1, 3, 5 in one process (the cache is shared); line 3 fails, line 5 still runs
    assert run.main(["--job_list", str(jobs), "--job", "1", "--num_jobs", "2"]) == 1
    assert out.read_text() == "a 1\ne 3\n"
    assert f"1 of 3 run(s) failed:\n  python -m fake_job fail --out {out}" in caplog.text
    assert "this line fails" in caplog.text   # the traceback of the failed line
    caplog.clear()
    assert run.main(["--job_list", str(jobs), "--job", "2", "--num_jobs", "2"]) == 0
    assert out.read_text() == "a 1\ne 3\nb 1\nd 2\n"
    assert "failed" not in caplog.text


def test_runner_refuses_a_bad_line_a_bad_module_and_counts(tmp_path, job_module, capsys, caplog):
    jobs = tmp_path / "jobs.txt"
    out = tmp_path / "o.txt"
    write_job_file(jobs, job_module, 2, [f"a --out {out} --bogus 1", f"b --out {out}", f"c --out {out}"])
    assert run.main(["--job_list", str(jobs), "--job", "1", "--num_jobs", "2"]) == 1   # argparse refuses line 1
    assert "--bogus" in capsys.readouterr().err
    assert out.read_text() == "c 1\n"   # the line after the refused one still ran
    assert run.main(["--job_list", str(jobs), "--count", "--max_jobs", "4"]) == 0
    assert capsys.readouterr().out.split() == ["3", "2"]                            # 3 runs, 2 per job
    write_job_file(jobs, "etser.runtime", 1, ["x"])                                   # no build_parser/run_line
    assert run.main(["--job_list", str(jobs)]) == 1
    assert "job module etser.runtime has no build_parser() and no run_line()" in caplog.text


@pytest.mark.parametrize("module", ["etser.learn.train", "etser.learn.score", "etser.caption.train", "etser.caption.score",
                                    "etser.espnet_backend"])
def test_every_job_module_of_the_planner_keeps_the_protocol(module):
    from etser.launch.plan import JOB_MODULES

    assert module in {m for pair in JOB_MODULES.values() for m in pair}
    code = f"import {module} as m; assert callable(m.build_parser) and callable(m.run_line)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

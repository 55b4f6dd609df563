"""The one job runner of stages 3 and 4: runs job ``J`` of ``N`` of a job file in one process.

    python -m etser.launch.run --job_list exp/train_jobs.txt --job JOB --num_jobs N
    python -m etser.launch.run --job_list exp/train_jobs.txt --count --max_jobs NJ   # prints "<runs> <jobs>"

A job file (written by ``python -m etser.launch.plan``) names its job module and how many lines one job
should take in its header (``# module:``, ``# runs_per_job:``), then holds one argument line per run.  Job
``J`` runs lines ``J, J+N, ...`` (1-based): each line is parsed by the module's ``build_parser()`` and run by
its ``run_line(args, argv, cache)``, in one process so that imports and features loaded into ``cache`` are
paid once.  A failing line does not stop the others; the job exits 1 naming every line that failed.

``--count`` is what run.sh asks before launching: the number of runs and of jobs (``runs_per_job`` lines
each, at most ``--max_jobs``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from etser.runtime import job_file_header, job_list_lines, num_jobs, read_job_list

LOG = logging.getLogger("etser.launch.run")


def load_job_module(name: str, job_list: Path):
    """The job module named in a job file's header; an error naming the file when it breaks the protocol."""
    module = importlib.import_module(name)
    lacking = [f for f in ("build_parser", "run_line") if not callable(getattr(module, f, None))]
    if lacking:
        raise ValueError(f"{job_list}: job module {name} has no {' and no '.join(f + '()' for f in lacking)} "
                         "(a job module exposes build_parser() and run_line(args, argv, cache))")
    return module


def run_job(job_list: Path, job: int, total: int) -> int:
    """Run this job's lines; 0 when all succeeded, else 1 after naming the failed lines."""
    header = job_file_header(job_list)
    lines = job_list_lines(job_list, job, total)
    module = load_job_module(header["module"], job_list)
    parser = module.build_parser()
    cache: dict = {}
    failed = []
    start = time.monotonic()
    LOG.info("job %d/%d: %d run(s) of %s with %s", job, total, len(lines), job_list, header["module"])
    for i, argv in enumerate(lines, 1):
        line = shlex.join(argv)
        LOG.info("job %d/%d, run %d of %d: python -m %s %s", job, total, i, len(lines), header["module"], line)
        try:
            module.run_line(parser.parse_args(argv), argv, cache)
        except SystemExit as e:   # argparse refused the line (its message is above)
            if e.code not in (0, None):
                failed.append(line)
        except Exception:  # run the others; the exit code and the last lines say which failed
            LOG.exception("run failed: python -m %s %s", header["module"], line)
            failed.append(line)
    LOG.info("job %d/%d: %d of %d run(s) succeeded in %.1f s", job, total, len(lines) - len(failed), len(lines),
             time.monotonic() - start)
    if failed:
        LOG.error("job %d/%d: %d of %d run(s) failed:\n%s", job, total, len(failed), len(lines),
                  "\n".join(f"  python -m {header['module']} {x}" for x in failed))
        return 1
    return 0


def count(job_list: Path, max_jobs: int) -> tuple[int, int]:
    """(runs, jobs) of a job file for at most ``max_jobs`` jobs."""
    header = job_file_header(job_list)
    runs = len(read_job_list(job_list))
    return runs, num_jobs(runs, header["runs_per_job"], max_jobs)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    ap = argparse.ArgumentParser(prog="python -m etser.launch.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--job_list", type=Path, required=True, help="a job file of etser.launch.plan")
    ap.add_argument("--job", type=int, default=1, help="this job's index (1-based)")
    ap.add_argument("--num_jobs", type=int, default=1, help="number of jobs sharing the file")
    ap.add_argument("--count", action="store_true", help="print '<runs> <jobs>' and exit (nothing is run)")
    ap.add_argument("--max_jobs", type=int, default=1, help="with --count: at most this many jobs (--nj)")
    a = ap.parse_args(argv)
    try:
        if a.count:
            if a.max_jobs < 1:
                raise ValueError(f"--max_jobs {a.max_jobs}: at least 1")
            print(*count(a.job_list, a.max_jobs))
            return 0
        return run_job(a.job_list, a.job, a.num_jobs)
    except (OSError, ValueError, ImportError) as e:
        LOG.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())

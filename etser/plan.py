"""Job planning for stages 3 and 4: the trainings and scorings of upstream x head x task x seed.

    python -m etser.plan train --feats_dirs "dump/A dump/B" --heads "superb paper" --seeds "1 2 3" \\
        [--tasks "speech_four ..."] [--sets "train val test"] [--backend ours|espnet] --out exp/train_jobs.txt
    python -m etser.plan score ... (same options) --out exp/score_jobs.txt
    python -m etser.plan run_line --job_list FILE --job N --module etser.espnet_backend

One line per run in the job file (shell-quoted arguments).  ``ours``: stage 3 lines are arguments of
``python -m etser.train`` (run through ``--job_list``), stage 4 lines of ``python -m etser.score``; heads are
the names of ``conf/train/*.yaml``, exp dirs ``exp/<tag>/<head>/<task>/seed<S>``.  ``espnet``: the lines are
``train ...`` / ``score ...`` arguments of ``python -m etser.espnet_backend``, one job each (``run_line``),
heads the names of ``conf/espnet/*.yaml``, exp dirs ``exp/<tag>/espnet_<head>/<task>/seed<S>``.

The task list of an upstream is its modality's default list of the tasks YAML (the modality comes from the
features' ``meta.json``) unless ``--tasks`` is given.  Unknown tasks or heads and duplicates (two runs of
one exp dir) are refused with the known names.  ``--sets``: stage 3 needs the train and valid sets in it;
stage 4 scores every other set of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from etser.cli import str2bool
from etser.featset import read_meta
from etser.runtime import job_list_lines
from etser.tasks import load_tasks

BACKENDS = {"ours": "conf/train", "espnet": "conf/espnet"}


@dataclasses.dataclass(frozen=True)
class Run:
    feats_dir: str
    tag: str
    modality: str
    head: str
    task: str
    seed: int
    exp_dir: str


class PlanError(ValueError):
    pass


def known_heads(backend: str, conf_root: Path = Path(".")) -> list[str]:
    if backend not in BACKENDS:
        raise PlanError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    return sorted(p.stem for p in (conf_root / BACKENDS[backend]).glob("*.yaml"))


def plan_runs(feats_dirs: Sequence[str], heads: Sequence[str], seeds: Sequence[int], tasks: Sequence[str] | None = None,
              backend: str = "ours", tasks_conf: Path | None = None, exp_root: str = "exp", train_set: str = "train",
              conf_root: Path = Path("."), warn=lambda msg: print(f"warning: {msg}", file=sys.stderr)) -> list[Run]:
    """Every run of feats dir x head x task x seed, in that order; errors for unknown names and duplicates."""
    taskset = load_tasks(tasks_conf)
    unknown = [t for t in tasks or () if t not in taskset.tasks]
    if unknown:
        raise PlanError(f"unknown task(s) {' '.join(unknown)} (in {taskset.path}); known tasks: "
                        f"{' '.join(taskset.names)}")
    heads_known = known_heads(backend, conf_root)
    unknown = [h for h in heads if h not in heads_known]
    if unknown:
        raise PlanError(f"unknown head(s) {' '.join(unknown)} for backend {backend} (no "
                        f"{BACKENDS[backend]}/<head>.yaml); known: {' '.join(heads_known) or '(none)'}")
    if not feats_dirs or not heads or not seeds:
        raise PlanError("nothing to plan: give at least one feats dir, head and seed")
    runs, seen = [], {}
    for feats_dir in feats_dirs:
        meta = read_meta(Path(feats_dir) / train_set)
        if not meta.get("pooled_stats_informative", True):
            warn(f"the pooled statistics of {Path(feats_dir).name} are the same for every utterance (per-utterance "
                 "CMVN): pooled heads (superb, paper) cannot learn from them; use an upstream without it "
                 "(fbank_no_cmvn), or frames with a frame head (attentive)")
        modality = meta["modality"]
        tag = Path(feats_dir).name
        for head in heads:
            for task in (list(tasks) if tasks else taskset.default_tasks(modality)):
                for seed in seeds:
                    head_dir = head if backend == "ours" else f"{backend}_{head}"
                    exp_dir = f"{exp_root}/{tag}/{head_dir}/{task}/seed{seed}"
                    run = Run(str(feats_dir), tag, modality, head, task, int(seed), exp_dir)
                    if exp_dir in seen:
                        raise PlanError(f"{exp_dir} would be trained twice (upstream {tag}, head {head}, task {task}, "
                                        f"seed {seed} given more than once)")
                    seen[exp_dir] = run
                    runs.append(run)
    return runs


def score_sets(sets: Sequence[str], train_set: str = "train", valid_set: str = "val") -> list[str]:
    out = [s for s in sets if s != train_set]
    if not out:
        raise PlanError(f"--sets {' '.join(sets)}: no set to score (every set but {train_set} is scored)")
    return out


def check_train_sets(sets: Sequence[str], train_set: str = "train", valid_set: str = "val") -> None:
    missing = [s for s in (train_set, valid_set) if s not in sets]
    if missing:
        raise PlanError(f"--sets {' '.join(sets)}: training needs {' and '.join(missing)} (trains on {train_set}, "
                        f"chooses the best epoch on {valid_set})")


def train_lines(runs: Sequence[Run], backend: str, data_dir: str, ngpu: int, num_threads: int, overwrite: bool,
                tasks_conf: str | None) -> list[str]:
    lines = []
    for r in runs:
        if backend == "ours":
            args = ["--config", f"conf/train/{r.head}.yaml", "--task", r.task, "--seed", str(r.seed),
                    "--data_dir", data_dir, "--feats_dir", r.feats_dir, "--exp_dir", r.exp_dir, "--ngpu", str(ngpu),
                    "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower()]
            if tasks_conf:
                args += ["--tasks_conf", tasks_conf]
        else:
            args = ["train", "--config", f"conf/espnet/{r.head}.yaml", "--task", r.task, "--seed", str(r.seed),
                    "--data_dir", data_dir, "--feats_dir", r.feats_dir, "--exp_dir", r.exp_dir, "--ngpu", str(ngpu),
                    "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower()]
        lines.append(shlex.join(args))
    return lines


def score_lines(runs: Sequence[Run], backend: str, sets: Sequence[str], data_dir: str, ngpu: int) -> list[str]:
    if backend == "ours":
        return [shlex.join(["--sets", " ".join(sets), "--ngpu", str(ngpu), r.exp_dir]) for r in runs]
    return [shlex.join(["score", "--exp_dir", r.exp_dir, "--sets", " ".join(sets), "--data_dir", data_dir,
                        "--ngpu", str(ngpu)]) for r in runs]


def run_line(job_list: Path, job: int, module: str) -> int:
    """Run line ``job`` (1-based) of ``job_list`` as ``python -m <module> <line>``; its exit code."""
    lines = job_list_lines(job_list, 1, 1)
    if not 1 <= job <= len(lines):
        raise PlanError(f"--job {job}: {job_list} has {len(lines)} line(s)")
    cmd = [sys.executable, "-m", module, *lines[job - 1]]
    print("run: " + shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.plan", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "score"):
        p = sub.add_parser(name, help=f"write the stage-{3 if name == 'train' else 4} job file")
        p.add_argument("--feats_dirs", required=True, help="space-separated dump/<tag> dirs (one per upstream)")
        p.add_argument("--heads", required=True, help="space-separated head names")
        p.add_argument("--seeds", required=True, help="space-separated seeds")
        p.add_argument("--tasks", default="", help="space-separated tasks (default: each upstream's modality's list)")
        p.add_argument("--sets", default="train val test")
        p.add_argument("--backend", default="ours", choices=sorted(BACKENDS))
        p.add_argument("--tasks_conf", default=None, help="tasks YAML (default: conf/tasks.yaml of the repo)")
        p.add_argument("--data_dir", default="data")
        p.add_argument("--exp_root", default="exp")
        p.add_argument("--ngpu", type=int, default=0)
        p.add_argument("--num_threads", type=int, default=1)
        p.add_argument("--overwrite", type=str2bool, default=False)
        p.add_argument("--out", type=Path, required=True, help="the job file to write")
    p = sub.add_parser("run_line", help="run one line of a job file as python -m MODULE LINE")
    p.add_argument("--job_list", type=Path, required=True)
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--module", required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "run_line":
            return run_line(a.job_list, a.job, a.module)
        sets = a.sets.split()
        if a.cmd == "train":
            check_train_sets(sets)
        runs = plan_runs(a.feats_dirs.split(), a.heads.split(), [int(s) for s in a.seeds.split()],
                         a.tasks.split() or None, a.backend, a.tasks_conf, a.exp_root)
        if a.cmd == "train":
            lines = train_lines(runs, a.backend, a.data_dir, a.ngpu, a.num_threads, a.overwrite, a.tasks_conf)
        else:
            lines = score_lines(runs, a.backend, score_sets(sets), a.data_dir, a.ngpu)
    except (PlanError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(a.out)
    by_tag: dict[str, set] = {}
    for r in runs:
        by_tag.setdefault(f"{r.tag} ({r.modality})", set()).add(r.task)
    print(f"{len(lines)} {'trainings' if a.cmd == 'train' else 'scorings'}: "
          + "; ".join(f"{k}: {' '.join(sorted(v))}" for k, v in by_tag.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Job planning for stages 3 and 4: the trainings and scorings of upstream x head x task x seed.

    python -m etser.plan train --feats_dirs "dump/A dump/B" --heads "superb paper" --seeds "1 2 3" \\
        [--tasks "speech_four ..."] [--sets "train val test"] [--backend ours|espnet] --out exp/train_jobs.txt
    python -m etser.plan score ... (same options) --out exp/score_jobs.txt
    python -m etser.plan run_line --job_list FILE --job N --module etser.espnet_backend
    python -m etser.plan fusion_train --fusion_streams "speech=fbank_no_cmvn text=text_baseline visual=visual_baseline" \
        --algos "attention mult" --seeds "1 2 3" [--tasks ...] --out exp/fusion_train_jobs.txt   (fusion_score: stage 4)

One line per run in the job file (shell-quoted arguments).  ``ours``: stage 3 lines are arguments of
``python -m etser.train`` (run through ``--job_list``), stage 4 lines of ``python -m etser.score``; heads are
the names of ``conf/train/*.yaml``, exp dirs ``exp/<tag>/<head>/<task>/seed<S>``.  ``espnet``: the lines are
``train ...`` / ``score ...`` arguments of ``python -m etser.espnet_backend``, one job each (``run_line``),
heads the names of ``conf/espnet/*.yaml``, exp dirs ``exp/<tag>/espnet_<head>/<task>/seed<S>``.

The task list of an upstream is its modality's default list of the tasks YAML (the modality comes from the
features' ``meta.json``) unless ``--tasks`` is given.  Unknown tasks or heads and duplicates (two runs of
one exp dir) are refused with the known names.  ``--sets``: stage 3 needs the train and valid sets in it;
stage 4 scores every other set of it.

Fusion: one stream per modality, ``NAME=UPSTREAM`` (a name of ``conf/upstream``, whose features are
``dump/<tag>``, or a dump dir); exp dirs ``exp/fusion_<tagA>+<tagB>+.../<algo>/<task>/seed<S>``; the tasks
default to the ``fusion`` list of the tasks YAML.  A stream never extracted is an error saying which
stage-2 run makes it.
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
from etser.yamlfile import read_yaml

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
    names = sorted(p.stem for p in (conf_root / BACKENDS[backend]).glob("*.yaml"))
    if backend == "ours":   # heads over several streams are planned by fusion_train / fusion_score
        from etser.heads import HEADS

        def one_stream(name: str) -> bool:
            head = (read_yaml(conf_root / BACKENDS[backend] / f"{name}.yaml") or {}).get("head")
            return head not in HEADS or HEADS[head].num_streams == 1
        names = [n for n in names if one_stream(n)]
    return names


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


@dataclasses.dataclass(frozen=True)
class FusionRun:
    streams: tuple[tuple[str, str], ...]   # (name, dump dir)
    tag: str
    algo: str
    task: str
    seed: int
    exp_dir: str


def resolve_streams(spec: str, train_set: str = "train", conf_dir: str = "conf/upstream",
                    dump_root: str = "dump") -> list[tuple[str, str]]:
    """``"speech=fbank_no_cmvn text=dump/x"`` -> [(name, dump dir)], each checked to hold stage-2 features."""
    from etser.upstream import config_tag

    out, seen = [], set()
    for item in spec.split():
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise PlanError(f"--fusion_streams item {item!r}: expected NAME=UPSTREAM (e.g. speech=fbank_no_cmvn)")
        if name in seen:
            raise PlanError(f"--fusion_streams names stream {name} twice")
        seen.add(name)
        if (Path(conf_dir) / f"{value}.yaml").is_file():
            fdir = f"{dump_root}/{config_tag(value, conf_dir)}"
            hint = f"./run.sh --stage 2 --stop_stage 2 --upstreams {value}"
        elif Path(value).is_dir():
            fdir, hint = value, "stage 2 for that upstream"
        else:
            raise PlanError(f"--fusion_streams {item}: {value} is neither an upstream ({conf_dir}/{value}.yaml) nor "
                            "a feature dir")
        if not (Path(fdir) / train_set / "meta.json").is_file():
            raise PlanError(f"fusion stream {name}: {fdir}/{train_set} has no features (never extracted): run {hint}")
        out.append((name, fdir))
    if len(out) < 2:
        raise PlanError(f"--fusion_streams {spec!r}: fusion needs two or more streams")
    return out


def plan_fusion(streams: Sequence[tuple[str, str]], algos: Sequence[str], seeds: Sequence[int],
                tasks: Sequence[str] | None = None, tasks_conf: Path | None = None, exp_root: str = "exp"
                ) -> list[FusionRun]:
    from etser.fusion import FUSION_MODELS

    taskset = load_tasks(tasks_conf)
    tasks = list(tasks) if tasks else taskset.default_tasks("fusion")
    unknown = [t for t in tasks if t not in taskset.tasks]
    if unknown:
        raise PlanError(f"unknown task(s) {' '.join(unknown)} (in {taskset.path}); known tasks: {' '.join(taskset.names)}")
    unknown = [a for a in algos if a not in FUSION_MODELS]
    if unknown:
        raise PlanError(f"unknown fusion algorithm(s) {' '.join(unknown)}; known: {' '.join(FUSION_MODELS)}")
    if len(set(algos)) != len(algos) or len(set(seeds)) != len(seeds) or len(set(tasks)) != len(tasks):
        raise PlanError("an algorithm, task or seed is given twice")
    tag = "fusion_" + "+".join(Path(d).name for _, d in streams)
    return [FusionRun(tuple(streams), tag, a, t, int(s), f"{exp_root}/{tag}/{a}/{t}/seed{s}")
            for a in algos for t in tasks for s in seeds]


def fusion_train_lines(runs: Sequence[FusionRun], data_dir: str, ngpu: int, num_threads: int, overwrite: bool,
                       tasks_conf: str | None, allow_missing: bool = False, trials: int = 0,
                       search_seed: int = 0) -> list[str]:
    lines = []
    for r in runs:
        args = ["--config", "conf/train/fusion.yaml", "--conf", f"head_conf.algo={r.algo}", "--task", r.task,
                "--seed", str(r.seed), "--data_dir", data_dir,
                "--fusion_streams", " ".join(f"{n}={d}" for n, d in r.streams), "--exp_dir", r.exp_dir,
                "--ngpu", str(ngpu), "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower()]
        if allow_missing:
            args += ["--conf", "allow_missing=true"]
        if trials:
            args += ["--conf", f"fusion_trials={int(trials)}", "--conf", f"fusion_search_seed={int(search_seed)}"]
        if tasks_conf:
            args += ["--tasks_conf", tasks_conf]
        lines.append(shlex.join(args))
    return lines
def _duplicates(items: Sequence[str]) -> list[str]:
    seen, dup = set(), []
    for x in items:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    return dup


def check_options(upstreams: Sequence[str], heads: Sequence[str], tasks: Sequence[str], seeds: Sequence[str],
                  backend: str = "ours", tasks_conf: Path | None = None, conf_root: Path = Path(".")) -> list[str]:
    """Everything wrong with run.sh's name options, found before anything is deleted or launched: duplicates
    (two jobs must never train one exp dir), unknown tasks and heads, training configs with unknown keys,
    upstream configs that do not load, seeds that are no integers."""
    errors = []
    for what, items in (("--upstreams", upstreams), ("--heads", heads), ("--tasks", tasks), ("--seeds", seeds)):
        dup = _duplicates(items)
        if dup:
            errors.append(f"{what} names {' '.join(dup)} more than once (two jobs would write one exp dir)")
    bad_seeds = [x for x in seeds if not x.lstrip("-").isdigit()]
    if bad_seeds:
        errors.append(f"--seeds: {' '.join(bad_seeds)} is not an integer")
    if not seeds:
        errors.append("--seeds is empty")
    taskset = load_tasks(tasks_conf)
    unknown = [t for t in tasks if t not in taskset.tasks]
    if unknown:
        errors.append(f"--tasks: unknown {' '.join(unknown)} (in {taskset.path}); known: {' '.join(taskset.names)}")
    known = known_heads(backend, conf_root)
    unknown = [h for h in heads if h not in known]
    if unknown:
        errors.append(f"--heads: unknown {' '.join(unknown)} for backend {backend} (no {BACKENDS[backend]}/<head>.yaml); "
                      f"known: {' '.join(known) or '(none)'}")
    elif backend == "ours":
        from etser.trainconf import load_config as load_train_config

        for h in heads:
            try:
                load_train_config(conf_root / BACKENDS[backend] / f"{h}.yaml")
            except (ValueError, OSError) as e:
                errors.append(f"--heads {h}: {e}")
    from etser.upstream import UpstreamError, find_config, load_config as load_upstream_config

    for up in upstreams:
        try:
            load_upstream_config(find_config(up, conf_root / "conf" / "upstream"))
        except (UpstreamError, ValueError, OSError) as e:
            errors.append(f"--upstreams {up}: {e}")
    return errors


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
    for name in ("fusion_train", "fusion_score"):
        p = sub.add_parser(name, help=f"write the stage-{3 if name == 'fusion_train' else 4} fusion job file")
        p.add_argument("--fusion_streams", required=True, help="NAME=UPSTREAM ... (or NAME=dump dir)")
        p.add_argument("--algos", required=True, help="space-separated fusion algorithms")
        p.add_argument("--seeds", required=True)
        p.add_argument("--tasks", default="", help="default: the 'fusion' list of the tasks YAML")
        p.add_argument("--sets", default="train val test")
        p.add_argument("--tasks_conf", default=None)
        p.add_argument("--upstream_conf_dir", default="conf/upstream")
        p.add_argument("--dump_root", default="dump", help="where stage 2 put the features (run.sh --dumpdir)")
        p.add_argument("--data_dir", default="data")
        p.add_argument("--exp_root", default="exp")
        p.add_argument("--ngpu", type=int, default=0)
        p.add_argument("--num_threads", type=int, default=1)
        p.add_argument("--overwrite", type=str2bool, default=False)
        p.add_argument("--allow_missing", type=str2bool, default=False)
        p.add_argument("--trials", type=int, default=0, help="random-search draws per run (0: conf defaults)")
        p.add_argument("--search_seed", type=int, default=0)
        p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("check", help="check run.sh's name options before anything runs (exit 1 naming each problem)")
    p.add_argument("--upstreams", default="")
    p.add_argument("--heads", default="")
    p.add_argument("--tasks", default="")
    p.add_argument("--seeds", default="")
    p.add_argument("--backend", default="ours", choices=sorted(BACKENDS))
    p.add_argument("--tasks_conf", default=None)
    p = sub.add_parser("run_line", help="run one line of a job file as python -m MODULE LINE")
    p.add_argument("--job_list", type=Path, required=True)
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--module", required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "run_line":
            return run_line(a.job_list, a.job, a.module)
        if a.cmd == "check":
            errors = check_options(a.upstreams.split(), a.heads.split(), a.tasks.split(), a.seeds.split(),
                                   a.backend, a.tasks_conf)
            for e in errors:
                print(f"error: {e}", file=sys.stderr)
            return 1 if errors else 0
        sets = a.sets.split()
        if a.cmd.startswith("fusion_"):
            return _write_fusion(a, sets)
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


def _write_fusion(a, sets: Sequence[str]) -> int:
    if a.cmd == "fusion_train":
        check_train_sets(sets)
    streams = resolve_streams(a.fusion_streams, conf_dir=a.upstream_conf_dir, dump_root=a.dump_root)
    runs = plan_fusion(streams, a.algos.split(), [int(s) for s in a.seeds.split()], a.tasks.split() or None,
                       a.tasks_conf, a.exp_root)
    if a.cmd == "fusion_train":
        lines = fusion_train_lines(runs, a.data_dir, a.ngpu, a.num_threads, a.overwrite, a.tasks_conf,
                                   a.allow_missing, a.trials, a.search_seed)
    else:
        lines = [shlex.join(["--sets", " ".join(score_sets(sets)), "--data_dir", a.data_dir, "--ngpu", str(a.ngpu),
                             r.exp_dir]) for r in runs]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(a.out)
    print(f"{len(lines)} fusion {'trainings' if a.cmd == 'fusion_train' else 'scorings'}: {runs[0].tag if runs else ''}"
          f" x {' '.join(a.algos.split())} x {' '.join(sorted({r.task for r in runs}))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

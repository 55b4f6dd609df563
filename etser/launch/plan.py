"""The one planner of stages 3 and 4: every job file (classifier, ESPnet, fusion, captioning), the check of
run.sh's options before anything runs, and the fit of the run to the release.

    python -m etser.launch.plan train --feats_dirs "dump/A dump/B" --heads "superb paper" --seeds "1 2 3" \\
        [--tasks "speech_four ..."] [--sets "train val test"] [--backend ours|espnet] --out exp/train_jobs.txt
    python -m etser.launch.plan score ... (same options) --out exp/score_jobs.txt
    python -m etser.launch.plan fusion_train --fusion_streams "speech=fbank_no_cmvn text=text_baseline visual=visual_baseline" \\
        --algos "attention mult" --seeds "1 2 3" [--tasks ...] --out exp/fusion_train_jobs.txt   (fusion_score: stage 4)
    python -m etser.launch.plan caption_train --feats_dir dump/<tag> --decoders "transformer" \\
        --kinds "speaker style emotion overall" --seeds "1" --out exp/caption_train_jobs.txt   (caption_score: stage 4)
    python -m etser.launch.plan check ... / fit ... / default_heads --backend ours

Every job file goes through one writer (``etser.runtime.write_job_file``): a header naming the job module
(``JOB_MODULES``: one entry per run family) and the lines one job should take (``RUNS_PER_JOB``), then one
shell-quoted argument line per run holding every option that matters (tasks conf, on_change, overwrite,
threads); ``python -m etser.launch.run`` runs them.  Exp dirs: ``exp/<tag>/<head>/<task>/seed<S>`` (ours),
``exp/<tag>/espnet_<head>/<task>/seed<S>`` (ESPnet; heads are the names of ``conf/espnet/*.yaml``),
``exp/fusion_<tagA>+<tagB>+.../<algo>/<task>/seed<S>``, ``exp/caption/<tag>/<decoder>/<kind>/seed<S>`` and
``exp/caption/<tag>/baseline_<name>/<kind>`` (one level deeper than the classifiers', so that neither results
table reads the other's metrics.json).

Random search (``--search_trials N --search_runs K --search_seed S``; 0 draws: none): a row (upstream x head x
task, or fusion algorithm x task) whose head has a search space gets N draw lines instead of its seeds
(``--search_phase draws``), then, once they are done, K runs of the best on val (``--search_phase runs``, a
second stage-3 job file); stage 4 scores those K runs (:func:`plan_search`, :mod:`etser.learn.search`).

The task list of an upstream is its modality's default list of the tasks YAML (the modality comes from the
features' ``meta.json``) unless ``--tasks`` is given.  Unknown tasks or heads and duplicates (two runs of
one exp dir) are refused with the known names.  ``--sets``: stage 3 needs the train and valid sets in it;
stage 4 scores every other set of it.

Fusion: one stream per modality, ``NAME=UPSTREAM`` (a name of ``conf/upstream``, whose features are
``dump/<tag>``, or a dump dir); the tasks default to the ``fusion`` list of the tasks YAML.  A stream never
extracted is an error saying which stage-2 run makes it.  Captioning: the kinds, each decoder's
``<conf_dir>/<decoder>.yaml`` and its local Hugging Face dir, frame-level features of the train and valid
sets and the train set's caption file of every kind are checked before any job.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Sequence

from etser.cli import name_value_items, str2bool
from etser.datadir import RELEASE_RECORD, release_tables
from etser.featset import MODALITIES, read_meta
from etser.runtime import write_job_file
from etser.tasks import load_tasks
from etser.yamlfile import read_yaml



class Backend:
    """A backend of the classifier runs (``--backend``); what differs between backends is
    declared by its class: its head configs (``<conf_dir>/<head>.yaml``), run family (``JOB_MODULES``), exp
    dir of a head, default head, which heads it offers, what is checked of their configs and its job lines."""

    name = conf_dir = family = ""
    takes_train_options = False   # its head configs are conf/train's (a protocol's training options apply)

    def head_dir(self, head: str) -> str:
        return f"{self.name}_{head}"

    def default_head(self) -> str:
        raise NotImplementedError

    def offers(self, conf_dir: Path, name: str) -> bool:
        """Whether the head config ``name`` of its conf dir is a classifier head of this backend."""
        return True

    def check_config(self, path: Path, overrides: Sequence[str] = ()) -> None:
        """Errors of a head config (with ``overrides``) found before any job (ValueError, OSError)."""

    def searched(self, path: Path) -> bool:
        """Whether the head config at ``path`` has a random-search space (its head's tune lists)."""
        return False

    def train_args(self, args: list[str], on_change: str) -> list[str]:
        raise NotImplementedError

    def score_args(self, run: "Run", sets: Sequence[str], data_dir: str, ngpu: int, on_change: str) -> list[str]:
        raise NotImplementedError


class Ours(Backend):
    """The recipe's own trainer (etser.learn.train / score) and its registered heads."""

    name, conf_dir, family = "ours", "conf/train", "classifier"
    takes_train_options = True

    def head_dir(self, head: str) -> str:
        return head

    def default_head(self) -> str:
        return "superb"

    def offers(self, conf_dir: Path, name: str) -> bool:
        # heads over several streams are planned by fusion_train / fusion_score
        from etser import models

        heads = models.discover("head")
        head = (read_yaml(conf_dir / f"{name}.yaml") or {}).get("head")
        return head not in heads or heads[head].num_streams == 1

    def check_config(self, path: Path, overrides: Sequence[str] = ()) -> None:
        from etser.learn.trainconf import load_config as load_train_config

        load_train_config(path, list(overrides))

    def searched(self, path: Path) -> bool:
        return searched_configs({"": (path, ())})[""]

    def train_args(self, args: list[str], on_change: str) -> list[str]:
        return [*args, "--on_change", on_change]

    def score_args(self, run, sets, data_dir, ngpu, on_change) -> list[str]:
        return ["--sets", " ".join(sets), "--ngpu", str(ngpu), "--on_change", on_change, run.exp_dir]


class Espnet(Backend):
    """ESPnet's trainer (etser.espnet_backend): its runs have no provenance check (ESPnet resumes from its own
    checkpoint), so no --on_change."""

    name, conf_dir, family = "espnet", "conf/espnet", "espnet"

    def default_head(self) -> str:
        from etser.espnet_backend import DEFAULT_HEAD
        return DEFAULT_HEAD

    def train_args(self, args: list[str], on_change: str) -> list[str]:
        return ["train", *args]

    def score_args(self, run, sets, data_dir, ngpu, on_change) -> list[str]:
        return ["score", "--exp_dir", run.exp_dir, "--sets", " ".join(sets), "--data_dir", data_dir, "--ngpu", str(ngpu)]


BACKENDS = {b.name: b for b in (Ours(), Espnet())}
# The job module of each run family (the job-module protocol: build_parser() and run_line(args, argv, cache)),
# (stage-3 module, stage-4 module).
JOB_MODULES = {
    "classifier": ("etser.learn.train", "etser.learn.score"),
    "espnet": ("etser.espnet_backend", "etser.espnet_backend"),
    "fusion": ("etser.learn.train", "etser.learn.score"),
    "caption": ("etser.caption.train", "etser.caption.score"),
}
# Lines one job process should take, (stage 3, stage 4); run.sh makes ceil(lines / N) jobs, at most --nj.
# Trainings: one per job, as many jobs as --nj allows.  Scoring one training takes well under a second
# after ~5 s of imports: about six per job.  A caption scoring job starts one METEOR Java (~35 s): twelve.
RUNS_PER_JOB = {"classifier": (1, 6), "espnet": (1, 1), "fusion": (1, 6), "caption": (1, 12)}


def default_heads(backend: str) -> list[str]:
    """The heads of a run that names none: each backend has its own."""
    return [BACKENDS[backend].default_head()]


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
    conf_dir = conf_root / BACKENDS[backend].conf_dir
    return [n for n in sorted(p.stem for p in conf_dir.glob("*.yaml")) if BACKENDS[backend].offers(conf_dir, n)]


def not_for_heads(taskset, tasks: Sequence[str]) -> list[str]:
    """The known tasks of ``tasks`` that heads and fusion models do not learn (e.g. caption tasks: decoders)."""
    return [t for t in tasks if t in taskset.tasks and taskset.tasks[t].model_family != "head"]


def release_default_tasks(taskset, modality: str, data_dir: str | Path | None, train_set: str = "train"
                          ) -> tuple[list[str], list[str]]:
    """A modality's default task list split into those the release has labels for and those it has not
    (their label table is not among what stage 1 wrote; no data dir given: all are kept)."""
    names = taskset.default_tasks(modality)
    if data_dir is None or not ((Path(data_dir) / RELEASE_RECORD).is_file() or (Path(data_dir) / train_set).is_dir()):
        return names, []   # planning without a data dir (job files only): nothing to fit
    tables = release_tables(data_dir, train_set)
    return ([t for t in names if taskset.tasks[t].label_file in tables],
            [t for t in names if taskset.tasks[t].label_file not in tables])


def plan_runs(feats_dirs: Sequence[str], heads: Sequence[str], seeds: Sequence[int], tasks: Sequence[str] | None = None,
              backend: str = "ours", tasks_conf: Path | None = None, exp_root: str = "exp", train_set: str = "train",
              conf_root: Path = Path("."), warn=lambda msg: print(f"warning: {msg}", file=sys.stderr),
              data_dir: str | Path | None = None) -> list[Run]:
    """Every run of feats dir x head x task x seed, in that order; errors for unknown names and duplicates.

    Without ``tasks`` each upstream gets its modality's default tasks that the release in ``data_dir`` has
    labels for."""
    taskset = load_tasks(tasks_conf)
    unknown = [t for t in tasks or () if t not in taskset.tasks]
    if unknown:
        raise PlanError(f"unknown task(s) {' '.join(unknown)} (in {taskset.path}); known tasks: "
                        f"{' '.join(taskset.names)}")
    other = not_for_heads(taskset, tasks or ())
    if other:
        raise PlanError(f"task(s) {' '.join(other)} are learnt by {taskset.tasks[other[0]].model_family}s, not heads "
                        "(captioning: --caption_kinds)")
    heads_known = known_heads(backend, conf_root)
    unknown = [h for h in heads if h not in heads_known]
    if unknown:
        raise PlanError(f"unknown head(s) {' '.join(unknown)} for backend {backend} (no "
                        f"{BACKENDS[backend].conf_dir}/<head>.yaml); known: {' '.join(heads_known) or '(none)'}")
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
            for task in (list(tasks) if tasks else release_default_tasks(taskset, modality, data_dir, train_set)[0]):
                for seed in seeds:
                    head_dir = BACKENDS[backend].head_dir(head)
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


def parse_streams(spec: str, conf_dir: str = "conf/upstream", train_set: str = "train"
                  ) -> list[tuple[str, str, bool]]:
    """``"speech=fbank_no_cmvn text=dump/x"`` -> [(name, value, value is an upstream name)].

    Refused: an item that is not NAME=UPSTREAM, a name given twice, fewer than two streams, a value that is
    neither an upstream config nor a feature dir, and a name that is not the modality of its upstream (its
    config's ``modality``) or of its feature dir (``meta.json``)."""
    from etser.features.upstream import UpstreamError, load_config, modality

    try:
        items = name_value_items(spec, "--fusion_streams", "NAME=UPSTREAM (e.g. speech=fbank_no_cmvn)")
    except ValueError as e:
        raise PlanError(str(e)) from None
    out = []
    for name, value in items:
        item = f"{name}={value}"
        if name not in MODALITIES:
            raise PlanError(f"--fusion_streams {item}: {name} is not a modality; streams are named "
                            f"{', '.join(MODALITIES)}")
        conf = Path(conf_dir) / f"{value}.yaml"
        if conf.is_file():
            try:
                mod, where = modality(load_config(conf)), str(conf)
            except (UpstreamError, ValueError, OSError) as e:
                raise PlanError(f"--fusion_streams {item}: {e}") from None
            is_upstream = True
        elif Path(value).is_dir():
            meta = Path(value) / train_set / "meta.json"
            is_upstream = False
            if not meta.is_file():   # refused when planned (resolve_streams): no features to train on
                out.append((name, value, is_upstream))
                continue
            mod, where = read_meta(meta.parent)["modality"], str(meta)
        else:
            raise PlanError(f"--fusion_streams {item}: {value} is neither an upstream ({conf_dir}/{value}.yaml) nor "
                            "a feature dir")
        if mod != name:
            raise PlanError(f"--fusion_streams {item}: {value} is a {mod} upstream ({where}), not {name}: name each "
                            f"stream by its modality ({mod}={value})")
        out.append((name, value, is_upstream))
    if len(out) < 2:
        raise PlanError(f"--fusion_streams {spec!r}: fusion needs two or more streams")
    return out


def resolve_streams(spec: str, train_set: str = "train", conf_dir: str = "conf/upstream",
                    dump_root: str = "dump") -> list[tuple[str, str]]:
    """``parse_streams``, each stream then resolved to its dump dir and checked to hold stage-2 features."""
    from etser.features.upstream import config_tag

    out = []
    for name, value, is_upstream in parse_streams(spec, conf_dir, train_set):
        if is_upstream:
            fdir = f"{dump_root}/{config_tag(value, conf_dir)}"
            if not (Path(fdir) / train_set / "meta.json").is_file():
                raise PlanError(f"fusion stream {name}: {fdir}/{train_set} has no features (never extracted): run "
                                f"./run.sh --stage 2 --stop_stage 2 --upstreams {value}")
            mod = read_meta(Path(fdir) / train_set)["modality"]
            if mod != name:   # a dump made from another config than the one named now
                raise PlanError(f"fusion stream {name}: {fdir}/{train_set}/meta.json says modality {mod}")
        else:
            fdir = value
            if not (Path(fdir) / train_set / "meta.json").is_file():
                raise PlanError(f"fusion stream {name}: {fdir}/{train_set} has no features (never extracted): run "
                                "stage 2 for that upstream")
        out.append((name, fdir))
    return out


def plan_fusion(streams: Sequence[tuple[str, str]], algos: Sequence[str], seeds: Sequence[int],
                tasks: Sequence[str] | None = None, tasks_conf: Path | None = None, exp_root: str = "exp",
                data_dir: str | Path | None = None, conf_root: Path = Path(".")) -> list[FusionRun]:
    taskset = load_tasks(tasks_conf)
    tasks = list(tasks) if tasks else release_default_tasks(taskset, "fusion", data_dir)[0]
    unknown = [t for t in tasks if t not in taskset.tasks]
    if unknown:
        raise PlanError(f"unknown task(s) {' '.join(unknown)} (in {taskset.path}); known tasks: {' '.join(taskset.names)}")
    other = not_for_heads(taskset, tasks)
    if other:
        raise PlanError(f"task(s) {' '.join(other)} are learnt by {taskset.tasks[other[0]].model_family}s, not "
                        "fusion models")
    errors = check_fusion_algos(algos, conf_root)
    if errors:
        raise PlanError("; ".join(errors))
    if len(set(algos)) != len(algos) or len(set(seeds)) != len(seeds) or len(set(tasks)) != len(tasks):
        raise PlanError("an algorithm, task or seed is given twice")
    tag = "fusion_" + "+".join(Path(d).name for _, d in streams)
    return [FusionRun(tuple(streams), tag, a, t, int(s), f"{exp_root}/{tag}/{a}/{t}/seed{s}")
            for a in algos for t in tasks for s in seeds]


def fusion_train_lines(runs: Sequence[FusionRun], data_dir: str, ngpu: int, num_threads: int, overwrite: bool,
                       tasks_conf: str | None, allow_missing: bool = False, on_change: str = "redo",
                       protocol: dict | None = None) -> list[str]:
    extra = [a for item in protocol_conf(protocol, "fusion") for a in ("--conf", item)]
    lines = []
    for r in runs:
        args = ["--config", "conf/train/fusion.yaml", "--conf", f"head_conf.algo={r.algo}", "--task", r.task,
                "--seed", str(r.seed), "--data_dir", data_dir,
                "--fusion_streams", " ".join(f"{n}={d}" for n, d in r.streams), "--exp_dir", r.exp_dir,
                "--ngpu", str(ngpu), "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower(),
                "--on_change", on_change]
        if allow_missing:
            args += ["--conf", "allow_missing=true"]
        if tasks_conf:
            args += ["--tasks_conf", tasks_conf]
        lines.append(shlex.join(args + extra))
    return lines


def fusion_score_lines(runs: Sequence[FusionRun], sets: Sequence[str], data_dir: str, ngpu: int,
                       on_change: str = "redo") -> list[str]:
    return [shlex.join(["--sets", " ".join(sets), "--data_dir", data_dir, "--ngpu", str(ngpu),
                        "--on_change", on_change, r.exp_dir]) for r in runs]


def known_fusion(conf_root: Path = Path(".")) -> list[str]:
    """The fusion algorithms: one ``conf/fusion/<name>.yaml`` each (its model registers under that name)."""
    return sorted(p.stem for p in (conf_root / "conf" / "fusion").glob("*.yaml"))


def check_fusion_algos(algos: Sequence[str], conf_root: Path = Path(".")) -> list[str]:
    """Errors for algorithms without a ``conf/fusion/<name>.yaml`` or without a registered model."""
    from etser.models.fusion import FUSION_MODELS

    known = known_fusion(conf_root)
    errors = []
    unknown = [a for a in algos if a not in known]
    if unknown:
        errors.append(f"--fusion: unknown {' '.join(unknown)}; known: {' '.join(known) or '(none)'} "
                      "(one conf/fusion/<name>.yaml each)")
    unregistered = [a for a in algos if a in known and a not in FUSION_MODELS]
    if unregistered:
        errors.append(f"--fusion: {' '.join(unregistered)} has a conf/fusion YAML but no registered model "
                      f"(registered: {' '.join(sorted(FUSION_MODELS))})")
    return errors


def _duplicates(items: Sequence[str]) -> list[str]:
    seen, dup = set(), []
    for x in items:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    return dup


def check_options(upstreams: Sequence[str], heads: Sequence[str], tasks: Sequence[str], seeds: Sequence[str],
                  backend: str = "ours", tasks_conf: Path | None = None, conf_root: Path = Path("."), *,
                  fusion: Sequence[str] = (), fusion_streams: str = "", fusion_tasks: Sequence[str] = (),
                  caption_decoders: Sequence[str] = (), caption_kinds: Sequence[str] = (),
                  caption_upstream: str = "", dirs: Sequence[tuple[str, str]] = (),
                  protocol: str | None = None) -> list[str]:
    """Everything wrong with run.sh's options, found before anything is deleted or launched: duplicates
    (two jobs must never train one exp dir), unknown tasks and heads, training configs with unknown keys,
    upstream configs that do not load, seeds that are no integers; fusion algorithms, streams (each named by
    its upstream's modality) and tasks; caption decoders, kinds and upstream (a speech one); output dirs that
    are, or lie inside, another one (``dirs``: (option, path), e.g. ("--expdir", "exp")); the ``protocol``
    file and its training options on every head and fusion algorithm."""
    errors = []
    errors += check_dirs(dirs)
    try:
        proto = load_run_protocol(protocol)
    except PlanError as e:
        errors.append(str(e))
        proto = None
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
    for what, items in (("--tasks", tasks), ("--fusion_tasks", fusion_tasks)):
        other = not_for_heads(taskset, items)
        if other:
            errors.append(f"{what}: {' '.join(other)} are learnt by {taskset.tasks[other[0]].model_family}s, not "
                          "heads (captioning: --caption_kinds)")
    known = known_heads(backend, conf_root)
    unknown = [h for h in heads if h not in known]
    if unknown:
        errors.append(f"--heads: unknown {' '.join(unknown)} for backend {backend} (no {BACKENDS[backend].conf_dir}/<head>.yaml); "
                      f"known: {' '.join(known) or '(none)'}")
    else:
        b = BACKENDS[backend]
        items = protocol_conf(proto, "classifier")
        if items and not b.takes_train_options:
            errors.append(f"--protocol {proto['name']} sets training options of conf/train; --backend {backend} has "
                          "its own configs: use --protocol corrected with it")
        for h in heads:
            try:
                b.check_config(conf_root / b.conf_dir / f"{h}.yaml", items if b.takes_train_options else ())
            except (ValueError, OSError) as e:
                errors.append(f"--heads {h}" + (f" under protocol {proto['name']}" if proto else "") + f": {e}")
    from etser.features.upstream import UpstreamError, find_config, load_config as load_upstream_config, modality

    for up in upstreams:
        try:
            load_upstream_config(find_config(up, conf_root / "conf" / "upstream"))
        except (UpstreamError, ValueError, OSError) as e:
            errors.append(f"--upstreams {up}: {e}")
    if fusion:
        for what, items in (("--fusion", fusion), ("--fusion_tasks", fusion_tasks)):
            dup = _duplicates(items)
            if dup:
                errors.append(f"{what} names {' '.join(dup)} more than once")
        algo_errors = check_fusion_algos(fusion, conf_root)
        errors += algo_errors
        if proto is not None and not algo_errors:
            from etser.learn.trainconf import load_config as load_train_config
            from etser.models.fusion import fusion_class
            from etser.models.fusion.base import COMMON_DEFAULTS

            for algo in fusion:   # the protocol's options on each algorithm's model (e.g. official: true)
                try:
                    conf = load_train_config(conf_root / "conf" / "train" / "fusion.yaml",
                                             [f"head_conf.algo={algo}", *protocol_conf(proto, "fusion")])
                    unknown = sorted(set(conf["head_conf"]["fusion_conf"])
                                     - {*COMMON_DEFAULTS, *fusion_class(algo).defaults})
                    if unknown:
                        raise ValueError(f"unknown model option(s) {', '.join(unknown)}")
                except (ValueError, OSError) as e:
                    errors.append(f"--fusion {algo} under protocol {proto['name']}: {e}")
        unknown = [t for t in fusion_tasks if t not in taskset.tasks]
        if unknown:
            errors.append(f"--fusion_tasks: unknown {' '.join(unknown)} (in {taskset.path}); known: "
                          f"{' '.join(taskset.names)}")
        try:
            parse_streams(fusion_streams, str(conf_root / "conf" / "upstream"))
        except PlanError as e:
            errors.append(str(e))
    if caption_kinds or caption_decoders:
        from etser.tasks.caption import caption_tasks

        known = caption_tasks(tasks_conf)
        unknown = [k for k in caption_kinds if k not in known]
        if unknown:
            errors.append(f"--caption_kinds: unknown {' '.join(unknown)}; known: {' '.join(known)} (the caption "
                          f"tasks of {taskset.path})")
        try:
            check_decoders(caption_decoders, conf_root / "conf" / "caption")
        except PlanError as e:
            errors.append(f"--caption_decoders: {e}")
        for what, items in (("--caption_kinds", caption_kinds), ("--caption_decoders", caption_decoders)):
            dup = _duplicates(items)
            if dup:
                errors.append(f"{what} names {' '.join(dup)} more than once")
        from etser.tasks.caption import CaptionTask

        try:
            mod = modality(load_upstream_config(find_config(caption_upstream, conf_root / "conf" / "upstream")))
            if mod != CaptionTask.input_modality:
                errors.append(f"--caption_upstream {caption_upstream}: a {mod} upstream; the captioners read the "
                              f"frames of a {CaptionTask.input_modality} upstream")
        except (UpstreamError, ValueError, OSError) as e:
            errors.append(f"--caption_upstream {caption_upstream}: {e}")
    return errors


def check_decoders(decoders: Sequence[str], conf_dir: Path) -> list[Path]:
    """Each caption decoder's config (<conf_dir>/<decoder>.yaml), loaded and checked (its model dir included)."""
    from etser.caption.config import load_config

    if not decoders:
        raise PlanError("no caption decoder given")
    known = sorted(p.stem for p in conf_dir.glob("*.yaml") if p.stem != "metrics")
    paths = []
    for dec in decoders:
        path = conf_dir / f"{dec}.yaml"
        if not path.is_file():
            raise PlanError(f"caption decoder {dec}: no {path}; known: {' '.join(known)}")
        try:
            load_config(path)
        except (ValueError, FileNotFoundError) as e:
            raise PlanError(f"caption decoder {dec} ({path}): {e}") from None
        paths.append(path)
    if len(set(decoders)) != len(decoders):
        raise PlanError(f"caption decoders {' '.join(decoders)}: one given twice")
    return paths


def check_dirs(dirs: Sequence[tuple[str, str]]) -> list[str]:
    """Output dirs that are the same dir or one inside another: a later stage would delete or overwrite the
    other's files (stage 1 rewrites the data dir, --overwrite true removes dumps and trainings)."""
    import os

    errors = []
    real = [(opt, path, Path(os.path.realpath(path))) for opt, path in dirs]
    for i, (opt_a, path_a, a) in enumerate(real):
        for opt_b, path_b, b in real[i + 1:]:
            if a == b:
                errors.append(f"{opt_a} {path_a} and {opt_b} {path_b} are the same dir; give each its own")
            elif a in b.parents or b in a.parents:
                inner, outer = (opt_a, path_a), (opt_b, path_b)
                if a in b.parents:
                    inner, outer = outer, inner
                errors.append(f"{inner[0]} {inner[1]} lies inside {outer[0]} {outer[1]}; give each its own dir")
    return errors


@dataclasses.dataclass
class Fit:
    """What the run does on this release: the options as fitted, one note per family skipped, errors."""
    values: dict
    notes: list
    errors: list


def fit_release(data_dir: str | Path, upstreams: Sequence[str], tasks: Sequence[str], fusion: Sequence[str],
                fusion_streams: str, fusion_tasks: Sequence[str], caption: bool, caption_kinds: Sequence[str],
                caption_upstream: str, given: set[str], tasks_conf: Path | None = None,
                conf_root: Path = Path("."), train_set: str = "train", caption_asked: bool = False,
                extract: bool = True, train: bool = True) -> Fit:
    """Fit the run to what stage 1 found (``data/release.json``): a family whose inputs the release lacks is
    dropped with a note when it came from a default, and is an error when an option asked for it
    (``given``: the option names set on the command line or in a config; ``caption_asked``: --tasks named
    caption).  Inputs are checked only when stage 2 runs (``extract``: later stages read the dumps, not the
    inputs); labels only when a training stage runs (``train``: stage 2 alone needs none)."""
    from etser.features.extract import input_file
    from etser.features.upstream import find_config, load_config, modality

    conf_dir = conf_root / "conf" / "upstream"
    tables = release_tables(data_dir, train_set, any_set=not train)   # stage 2 alone may run on --sets test only
    record = f"{data_dir}/{RELEASE_RECORD}" if (Path(data_dir) / RELEASE_RECORD).is_file() else \
        f"{data_dir}/{train_set}"
    taskset = load_tasks(tasks_conf)
    notes, errors = [], []

    def lacks(table: str) -> str:
        return f"this release has no {table} ({record})"

    def up_input(name: str) -> tuple[str, str]:
        cfg = load_config(find_config(name, conf_dir))
        return modality(cfg), input_file(cfg, Path(".")).name

    kept = []
    for up in upstreams:
        mod, table = up_input(up)
        if table in tables or not extract:
            kept.append(up)
        elif "upstreams" in given or "upstream" in given:
            errors.append(f"--upstreams {up}: its {mod} features are made from data/{train_set}/{table}, and "
                          f"{lacks(table)}")
        else:
            notes.append(f"Skipped {mod} ({up}): {lacks(table)}")
    for t in tasks if train else []:
        if taskset.tasks[t].label_file not in tables:
            errors.append(f"--tasks {t}: its labels are data/{train_set}/{taskset.tasks[t].label_file}, and "
                          f"{lacks(taskset.tasks[t].label_file)}")
    if not tasks and train:
        for mod in dict.fromkeys(up_input(up)[0] for up in kept):
            ok, skipped = release_default_tasks(taskset, mod, data_dir, train_set)
            if skipped:
                notes.append(f"Skipped {mod} task(s) {' '.join(skipped)}: "
                             + "; ".join(dict.fromkeys(lacks(taskset.tasks[t].label_file) for t in skipped)))
            if not ok:
                dropped = [up for up in kept if up_input(up)[0] == mod]
                kept = [up for up in kept if up not in dropped]
                notes.append(f"Skipped {mod} ({' '.join(dropped)}): none of its tasks has labels in this release")

    streams_given = "fusion_streams" in given
    if fusion:
        streams = [(n, v) for n, v, _ in parse_streams(fusion_streams, str(conf_dir), train_set)]
        missing = []
        for name, value in streams:
            table = up_input(value)[1] if (conf_dir / f"{value}.yaml").is_file() else None
            if extract and table is not None and table not in tables:
                missing.append((name, value, table))
        if missing and streams_given:
            errors += [f"--fusion_streams {n}={v}: {lacks(t)}" for n, v, t in missing]
        elif missing:
            for n, v, t in missing:
                notes.append(f"Fusion stream {n} ({v}) left out: {lacks(t)}")
            streams = [(n, v) for n, v in streams if n not in {m[0] for m in missing}]
        if not streams_given:   # the default streams follow the upstreams of this run
            absent = [v for _, v in streams if v not in kept]
            if absent:
                notes.append(f"Skipped fusion ({' '.join(fusion)}): its default streams need --upstreams to include "
                             f"{' '.join(absent)} (or give --fusion_streams; --fusion '' turns this off)")
                streams = []
        for t in fusion_tasks if train else []:
            if taskset.tasks[t].label_file not in tables:
                errors.append(f"--fusion_tasks {t}: {lacks(taskset.tasks[t].label_file)}")
        ok, skipped = (fusion_tasks, []) if fusion_tasks or not train else release_default_tasks(taskset, "fusion", data_dir,
                                                                                     train_set)
        if streams and len(streams) < 2:
            notes.append(f"Skipped fusion ({' '.join(fusion)}): this release gives only the "
                         f"{streams[0][0]} stream")
            streams = []
        elif streams and not ok:
            notes.append(f"Skipped fusion ({' '.join(fusion)}): none of its tasks ({' '.join(skipped)}) has labels: "
                         + "; ".join(dict.fromkeys(lacks(taskset.tasks[t].label_file) for t in skipped)))
            streams = []
        elif streams and skipped:
            notes.append(f"Skipped fusion task(s) {' '.join(skipped)}: "
                         + "; ".join(dict.fromkeys(lacks(taskset.tasks[t].label_file) for t in skipped)))
        fusion_streams = " ".join(f"{n}={v}" for n, v in streams)
        if not streams:
            fusion = []
    kinds = list(caption_kinds)
    if caption:
        from etser.tasks.caption import caption_tasks

        ctasks = caption_tasks(tasks_conf)
        files = {k: ctasks[k].label_file if k in ctasks else f"utt2caption_{k}" for k in kinds}
        absent = [k for k in kinds if files[k] not in tables] if train else []
        if absent and ("caption_kinds" in given or caption_asked):
            errors += [f"--caption_kinds {k}: {lacks(files[k])}" for k in absent]
        elif absent:
            kinds = [k for k in kinds if k not in absent]
            notes.append(f"Skipped captioning of {' '.join(absent)}: "
                         + "; ".join(lacks(files[k]) for k in absent) if kinds else
                         f"Skipped captioning: {lacks('utt2caption_<kind>')} for any of {' '.join(absent)}")
        mod, table = up_input(caption_upstream)
        if extract and table not in tables:
            errors.append(f"--caption_upstream {caption_upstream}: {lacks(table)}")
        caption = bool(kinds)
    return Fit({"upstreams": " ".join(kept), "fusion": " ".join(fusion), "fusion_streams": fusion_streams,
                "caption": "true" if caption else "false", "caption_kinds": " ".join(kinds)}, notes, errors)


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
                tasks_conf: str | None, on_change: str = "redo", protocol: dict | None = None) -> list[str]:
    if not BACKENDS[backend].takes_train_options and protocol_conf(protocol, "classifier"):
        raise PlanError(f"protocol {protocol['name']} ({protocol['path']}) sets training options of conf/train; "
                        f"--backend {backend} has its own configs: use --protocol corrected with it")
    extra = [a for item in protocol_conf(protocol, "classifier") for a in ("--conf", item)]
    lines = []
    for r in runs:
        args = ["--config", f"{BACKENDS[backend].conf_dir}/{r.head}.yaml", "--task", r.task, "--seed", str(r.seed),
                "--data_dir", data_dir, "--feats_dir", r.feats_dir, "--exp_dir", r.exp_dir, "--ngpu", str(ngpu),
                "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower(), *extra]
        if tasks_conf:
            args += ["--tasks_conf", str(tasks_conf)]
        lines.append(shlex.join(BACKENDS[backend].train_args(args, on_change)))
    return lines


def score_lines(runs: Sequence[Run], backend: str, sets: Sequence[str], data_dir: str, ngpu: int,
                on_change: str = "redo") -> list[str]:
    return [shlex.join(BACKENDS[backend].score_args(r, sets, data_dir, ngpu, on_change)) for r in runs]


def check_trained(exp_dirs: Sequence[str]) -> None:
    """Stage 4 scores finished trainings only: one without ``done`` stops planning, saying to run stage 3."""
    untrained = [d for d in exp_dirs if not (Path(d) / "done").is_file()]
    if untrained:
        raise PlanError(f"{len(untrained)} of {len(exp_dirs)} training(s) to score are not finished (no "
                        f"{untrained[0]}/done{' ...' if len(untrained) > 1 else ''}): run stage 3 first "
                        "(./run.sh --stage 3 with the same options)")


def remove_scores(exp_dirs: Sequence[str], sets: Sequence[str]) -> None:
    """--overwrite true on stage 4: the planned decode dirs go, so every scoring is redone, not found up to date."""
    import shutil

    for exp_dir in exp_dirs:
        for s in sets:
            shutil.rmtree(Path(exp_dir) / f"decode_{s}", ignore_errors=True)


def caption_exp_dir(exp_root: str, tag: str, system: str, kind: str, seed: int | None = None) -> str:
    base = f"{exp_root}/caption/{tag}/{system}/{kind}"
    return base if seed is None else f"{base}/seed{seed}"


def caption_plan_tasks(kinds: Sequence[str], tasks_conf: Path | None = None) -> list:
    """The caption tasks of ``kinds`` (their ``caption_kind``s), or an error naming the known ones."""
    from etser.tasks.caption import caption_tasks

    known = caption_tasks(tasks_conf)
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise PlanError(f"caption kinds {' '.join(unknown) or '(none)'}: use some of {' '.join(known)}")
    return [known[k] for k in kinds]


def check_caption_inputs(feats_dir: Path, data_dir: Path, kinds: Sequence[str], upstream: str = "",
                         sets: Sequence[str] = ("train", "val"), tasks_conf: Path | None = None) -> None:
    """What a caption job would fail on: the kinds, frames of the train and valid sets, the caption files."""
    tasks = caption_plan_tasks(kinds, tasks_conf)
    for s in sets:
        meta = read_meta(feats_dir / s)
        if not meta.get("frame_layers") or not (feats_dir / s / "frames.scp").is_file():
            conf = f"conf/upstream/{upstream}.yaml" if upstream else "the upstream config"
            raise PlanError(f"{feats_dir / s} has no frame-level features (frames.scp), which captioning needs: "
                            f"set frames: {{layers: all}} in {conf} and rerun stage 2")
    for t in tasks:
        path = data_dir / sets[0] / t.label_file
        if not path.is_file():
            raise PlanError(f"{path} not found: the release has no {t.caption_kind} captions (stage 1 writes "
                            "utt2caption_<kind> from the Audio JSON sourceAttr); choose --caption_kinds among those "
                            "found")


def caption_train_lines(feats_dir: str, decoders: Sequence[str], kinds: Sequence[str], seeds: Sequence[int],
                        conf_dir: str, data_dir: str, exp_root: str, ngpu: int, num_threads: int, overwrite: bool,
                        on_change: str = "redo", tasks_conf: str | None = None) -> list[str]:
    tag = Path(feats_dir).name
    more = ["--tasks_conf", str(tasks_conf)] if tasks_conf else []
    return [shlex.join(["--config", f"{conf_dir}/{dec}.yaml", "--kind", kind, "--seed", str(seed), "--data_dir",
                        data_dir, "--feats_dir", feats_dir, "--exp_dir", caption_exp_dir(exp_root, tag, dec, kind, seed),
                        "--ngpu", str(ngpu), "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower(),
                        "--on_change", on_change, *more])
            for kind in kinds for dec in decoders for seed in seeds]


def caption_score_lines(feats_dir: str, decoders: Sequence[str], tasks: Sequence, seeds: Sequence[int],
                        baselines: bool, sets: Sequence[str], data_dir: str, exp_root: str, ngpu: int,
                        metrics_config: str, tasks_conf: str | None = None) -> list[str]:
    """A scoring line per trained captioner and, with ``baselines``, one per baseline of each caption task."""
    tag = Path(feats_dir).name
    common = ["--sets", " ".join(sets), "--data_dir", data_dir, "--feats_dir", feats_dir,
              "--metrics_config", metrics_config, *(["--tasks_conf", str(tasks_conf)] if tasks_conf else [])]
    lines = []
    for task in tasks:
        kind = task.caption_kind
        for dec in decoders:
            for seed in seeds:
                lines.append(shlex.join(["--exp_dir", caption_exp_dir(exp_root, tag, dec, kind, seed), *common,
                                         "--ngpu", str(ngpu)]))
        for b in task.baselines if baselines else ():
            lines.append(shlex.join(["--baseline", b, "--kind", kind, "--exp_dir",
                                     caption_exp_dir(exp_root, tag, f"baseline_{b}", kind), *common]))
    return lines


@dataclasses.dataclass(frozen=True)
class Search:
    """MERBench's protocol for the rows that have a search space: ``trials`` draws (0: no search), the best on
    val, then ``runs`` runs of it (seeds 1..runs, in place of --seeds); ``seed`` seeds the draws."""
    trials: int = 0
    runs: int = 6
    seed: int = 0


def search_options(a) -> Search:
    search = Search(int(a.search_trials), int(a.search_runs), int(a.search_seed))
    if search.trials < 0 or (search.trials and search.runs < 1):
        raise PlanError(f"--search_trials {search.trials} --search_runs {search.runs}: draws >= 0 and, with a "
                        "search, runs >= 1")
    return search


def searched_configs(configs: dict[str, tuple[Path, Sequence[str]]]) -> dict[str, bool]:
    """Name -> whether its training config (path, --conf overrides) has a search space (its head's)."""
    from etser.learn.trainconf import load_config as load_train_config
    from etser.models.heads import head_class

    out = {}
    for name, (path, overrides) in configs.items():
        conf = load_train_config(path, list(overrides))
        out[name] = bool(head_class(conf["head"]).search_space(conf))
    return out


def plan_search(runs: Sequence, search: Search, searched, phase: str, tasks_conf: Path | None = None
                ) -> tuple[list, list[list[str]]]:
    """The runs of a stage under ``search`` and the ``--conf`` items each adds to its line.

    Rows (the exp dir's parent) that ``searched(run)`` says have a search space are replaced, per ``phase``:
    ``draws`` (stage 3, first job file): its N draws; ``runs`` (stage 3, second job file, once the draws are
    done): the K runs of the draw :func:`etser.learn.search.select` chooses (rows not searched: none);
    ``score`` (stage 4): its K runs.  Other rows keep their runs in ``draws`` and ``score``.  No search:
    ``runs`` unchanged."""
    from etser.learn import search as srch

    if phase not in ("draws", "runs", "score"):
        raise PlanError(f"unknown search phase {phase!r}")
    out, extra, rows = [], [], set()
    for r in runs:
        if not search.trials or not searched(r):
            if phase != "runs":
                out.append(r)
                extra.append([])
            continue
        row = str(Path(r.exp_dir).parent)
        if row in rows:
            continue
        rows.add(row)
        if phase == "draws":
            for k in range(1, search.trials + 1):
                out.append(dataclasses.replace(r, seed=k, exp_dir=srch.draw_dir(row, k)))
                extra.append(["--conf", f"search_draw={k}", "--conf", f"search_seed={search.seed}"])
            continue
        best = 0
        if phase == "runs":
            lower = load_tasks(tasks_conf).get(r.task).lower_is_better
            try:
                best = srch.select(row, search.trials, search.seed, search.runs, lower)["best_draw"]
            except ValueError as e:
                raise PlanError(str(e)) from None
        for s in range(1, search.runs + 1):
            out.append(dataclasses.replace(r, seed=s, exp_dir=srch.run_dir(row, s)))
            extra.append(["--conf", f"search_draw={best}", "--conf", f"search_seed={search.seed}"])
    return out, extra


def with_conf(lines: Sequence[str], extra: Sequence[Sequence[str]]) -> list[str]:
    """Job lines with each one's extra ``--conf`` items appended."""
    return [line + (" " + shlex.join(x) if x else "") for line, x in zip(lines, extra, strict=True)]


def load_run_protocol(path: str | Path | None) -> dict | None:
    """The protocol of a run (conf/protocol/<name>.yaml), None when none is given (no options added)."""
    if not path:
        return None
    from etser.learn.config import load_protocol

    try:
        return load_protocol(Path(path))
    except (ValueError, FileNotFoundError) as e:
        raise PlanError(f"--protocol: {e}") from None


def protocol_conf(protocol: dict | None, family: str) -> list[str]:
    """The ``--conf`` items a protocol adds to the training lines of ``family`` (classifier | fusion)."""
    from etser.learn.config import DEFAULT_PROTOCOL, protocol_overrides

    return protocol_overrides(protocol, family, DEFAULT_PROTOCOL)


def protocol_shell(protocol: dict, given: set[str]) -> str:
    """run.sh assignments of the protocol's ``run`` options that the user did not give (``given``), each
    value shell-quoted, and ``protocol_name``/``protocol_version``."""
    values = {k: v for k, v in protocol["run"].items() if k not in given}
    values.update(protocol_name=protocol["name"], protocol_version=protocol["version"])
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


def _plan_classifiers(a, sets: Sequence[str]) -> tuple[str, list[str], str]:
    if a.cmd == "train":
        check_train_sets(sets)
    protocol = load_run_protocol(a.protocol)
    runs = plan_runs(a.feats_dirs.split(), a.heads.split(), [int(s) for s in a.seeds.split()],
                     a.tasks.split() or None, a.backend, a.tasks_conf, a.exp_root, data_dir=a.data_dir)
    backend = BACKENDS[a.backend]
    searched = {h: backend.searched(Path(backend.conf_dir) / f"{h}.yaml") for h in a.heads.split()}
    runs, extra = plan_search(runs, search_options(a), lambda r: searched.get(r.head, False),
                              a.search_phase if a.cmd == "train" else "score", a.tasks_conf)
    if a.cmd == "train":
        lines = with_conf(train_lines(runs, a.backend, a.data_dir, a.ngpu, a.num_threads, a.overwrite, a.tasks_conf,
                                      a.on_change, protocol), extra)
    else:
        if a.check_trained:
            check_trained([r.exp_dir for r in runs])
        lines = score_lines(runs, a.backend, score_sets(sets), a.data_dir, a.ngpu, a.on_change)
        if a.overwrite:
            remove_scores([r.exp_dir for r in runs], score_sets(sets))
    by_tag: dict[str, set] = {}
    for r in runs:
        by_tag.setdefault(f"{r.tag} ({r.modality})", set()).add(r.task)
    family = BACKENDS[a.backend].family
    return family, lines, "; ".join(f"{k}: {' '.join(sorted(v))}" for k, v in by_tag.items())


def _plan_fusion(a, sets: Sequence[str]) -> tuple[str, list[str], str]:
    if a.cmd == "fusion_train":
        check_train_sets(sets)
    streams = resolve_streams(a.fusion_streams, conf_dir=a.upstream_conf_dir, dump_root=a.dump_root)
    runs = plan_fusion(streams, a.algos.split(), [int(s) for s in a.seeds.split()], a.tasks.split() or None,
                       a.tasks_conf, a.exp_root, data_dir=a.data_dir)
    searched = searched_configs({x: (Path(BACKENDS["ours"].conf_dir) / "fusion.yaml", [f"head_conf.algo={x}"])
                                 for x in a.algos.split()})
    runs, extra = plan_search(runs, search_options(a), lambda r: searched[r.algo],
                              a.search_phase if a.cmd == "fusion_train" else "score", a.tasks_conf)
    if a.cmd == "fusion_train":
        lines = with_conf(fusion_train_lines(runs, a.data_dir, a.ngpu, a.num_threads, a.overwrite, a.tasks_conf,
                                             a.allow_missing, a.on_change, load_run_protocol(a.protocol)), extra)
    else:
        if a.check_trained:
            check_trained([r.exp_dir for r in runs])
        lines = fusion_score_lines(runs, score_sets(sets), a.data_dir, a.ngpu, a.on_change)
        if a.overwrite:
            remove_scores([r.exp_dir for r in runs], score_sets(sets))
    return "fusion", lines, (f"{runs[0].tag if runs else ''} x {' '.join(a.algos.split())} x "
                             f"{' '.join(sorted({r.task for r in runs}))}")


def _plan_caption(a, sets: Sequence[str]) -> tuple[str, list[str], str]:
    from etser.caption.metrics import load_metrics_config

    decoders, kinds = a.decoders.split(), a.kinds.split()
    if not kinds:   # the caption tasks of the tasks YAML's default list for captioning
        taskset = load_tasks(a.tasks_conf)
        kinds = [taskset.get(t).caption_kind for t in taskset.default_tasks("caption")]
    seeds = [int(s) for s in a.seeds.split()]
    if not seeds:
        raise PlanError("no caption seed given")
    check_train_sets(sets)
    check_decoders(decoders, Path(a.conf_dir))
    check_caption_inputs(Path(a.feats_dir), Path(a.data_dir), kinds, a.upstream, tasks_conf=a.tasks_conf)
    tasks = caption_plan_tasks(kinds, a.tasks_conf)
    if a.cmd == "caption_train":
        lines = caption_train_lines(a.feats_dir, decoders, kinds, seeds, a.conf_dir, a.data_dir, a.exp_root, a.ngpu,
                                    a.num_threads, a.overwrite, a.on_change, a.tasks_conf)
    else:
        load_metrics_config(Path(a.metrics_config))
        if a.check_trained:
            tag = Path(a.feats_dir).name
            check_trained([caption_exp_dir(a.exp_root, tag, d, k, s) for k in kinds for d in decoders for s in seeds])
        lines = caption_score_lines(a.feats_dir, decoders, tasks, seeds, a.baselines, score_sets(sets), a.data_dir,
                                    a.exp_root, a.ngpu, a.metrics_config, a.tasks_conf)
    baselines = " ".join(dict.fromkeys(b for t in tasks for b in t.baselines))
    return "caption", lines, (f"kinds {' '.join(kinds)}; decoders {' '.join(decoders)}; seeds "
                              f"{' '.join(map(str, seeds))}" + (f"; baselines {baselines}"
                                                                if a.cmd == "caption_score" and a.baselines else ""))


def _common_job_options(p: argparse.ArgumentParser, seeds: str | None = None) -> None:
    """The options every job-file command takes (what each line carries besides its run)."""
    p.add_argument("--seeds", required=seeds is None, default=seeds, help="space-separated seeds")
    p.add_argument("--sets", default="train val test")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--exp_root", default="exp")
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--overwrite", type=str2bool, default=False)
    p.add_argument("--on_change", choices=("redo", "refuse"), default="redo",
                   help="an output whose inputs changed: redo it or stop naming what changed (in every line)")
    p.add_argument("--check_trained", type=str2bool, default=False,
                   help="stage 4: refuse when a planned training is not finished (run.sh: stage 4 after stage 3)")
    p.add_argument("--protocol", default=None, help="conf/protocol/<name>.yaml: its training options go into every "
                   "training line (default: none added)")
    p.add_argument("--out", type=Path, required=True, help="the job file to write")


def _search_job_options(p: argparse.ArgumentParser) -> None:
    """The random search of the rows that have a search space (etser.learn.search)."""
    p.add_argument("--search_trials", type=int, default=0, help="draws per searched row (0: no search)")
    p.add_argument("--search_runs", type=int, default=Search.runs, help="runs of the chosen draw (seeds 1..K)")
    p.add_argument("--search_seed", type=int, default=Search.seed, help="seed of the draws")
    p.add_argument("--search_phase", choices=("draws", "runs"), default="draws",
                   help="stage 3: the draws (and the rows not searched), or the K runs of each chosen draw")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.launch.plan", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "score"):
        p = sub.add_parser(name, help=f"write the stage-{3 if name == 'train' else 4} job file")
        p.add_argument("--feats_dirs", required=True, help="space-separated dump/<tag> dirs (one per upstream)")
        p.add_argument("--heads", required=True, help="space-separated head names")
        p.add_argument("--tasks", default="", help="space-separated tasks (default: each upstream's modality's list)")
        p.add_argument("--backend", default="ours", choices=sorted(BACKENDS))
        p.add_argument("--tasks_conf", default=None, help="tasks YAML (default: conf/tasks.yaml of the repo)")
        _common_job_options(p)
        _search_job_options(p)
    for name in ("fusion_train", "fusion_score"):
        p = sub.add_parser(name, help=f"write the stage-{3 if name == 'fusion_train' else 4} fusion job file")
        p.add_argument("--fusion_streams", required=True, help="NAME=UPSTREAM ... (or NAME=dump dir)")
        p.add_argument("--algos", required=True, help="space-separated fusion algorithms")
        p.add_argument("--tasks", default="", help="default: the 'fusion' list of the tasks YAML")
        p.add_argument("--tasks_conf", default=None)
        p.add_argument("--upstream_conf_dir", default="conf/upstream")
        p.add_argument("--dump_root", default="dump", help="where stage 2 put the features (run.sh --dumpdir)")
        p.add_argument("--allow_missing", type=str2bool, default=False)
        _common_job_options(p)
        _search_job_options(p)
    for name in ("caption_train", "caption_score"):
        p = sub.add_parser(name, help=f"write the stage-{3 if name == 'caption_train' else 4} captioning job file")
        p.add_argument("--feats_dir", required=True, help="dump/<tag> of the caption upstream")
        p.add_argument("--upstream", default="", help="its name (for messages)")
        p.add_argument("--decoders", required=True, help="space-separated: names of <conf_dir>/<decoder>.yaml")
        p.add_argument("--kinds", default="", help="space-separated caption kinds (the caption_kind of caption "
                       "tasks; default: those of the tasks YAML's 'caption' default list)")
        p.add_argument("--tasks_conf", default=None, help="tasks YAML (default: conf/tasks.yaml of the repo)")
        p.add_argument("--baselines", type=str2bool, default=True)
        p.add_argument("--conf_dir", default="conf/caption")
        p.add_argument("--metrics_config", default="conf/caption/metrics.yaml")
        _common_job_options(p, seeds="1")
    p = sub.add_parser("check", help="check run.sh's options before anything runs (exit 1 naming each problem)")
    p.add_argument("--upstreams", default="")
    p.add_argument("--heads", default="")
    p.add_argument("--tasks", default="")
    p.add_argument("--seeds", default="")
    p.add_argument("--backend", default="ours", choices=sorted(BACKENDS))
    p.add_argument("--tasks_conf", default=None)
    p.add_argument("--fusion", default="", help="fusion algorithms (empty: no fusion, its options unchecked)")
    p.add_argument("--fusion_streams", default="")
    p.add_argument("--fusion_tasks", default="")
    p.add_argument("--caption_decoders", default="", help="empty: no captioning, its options unchecked")
    p.add_argument("--caption_kinds", default="")
    p.add_argument("--caption_upstream", default="")
    p.add_argument("--protocol", default=None, help="conf/protocol/<name>.yaml: checked with its training options")
    p.add_argument("--dir", nargs=2, action="append", default=[], metavar=("NAME", "PATH"),
                   help="an output dir of the run and its option's name, e.g. expdir exp (repeat): none may be, "
                        "or lie inside, another")
    p = sub.add_parser("fit", help="fit run.sh's families to what stage 1 found: prints shell assignments, "
                                   "one line per family skipped on stderr, exit 1 naming an option the release "
                                   "cannot serve")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--upstreams", default="")
    p.add_argument("--tasks", default="")
    p.add_argument("--fusion", default="")
    p.add_argument("--fusion_streams", default="")
    p.add_argument("--fusion_tasks", default="")
    p.add_argument("--caption", type=str2bool, default=False)
    p.add_argument("--caption_asked", type=str2bool, default=False, help="--tasks named caption")
    p.add_argument("--caption_kinds", default="")
    p.add_argument("--caption_upstream", default="")
    p.add_argument("--given", default="", help="the option names the user set (utils/parse_options.sh po_given)")
    p.add_argument("--tasks_conf", default=None)
    p.add_argument("--extract", type=str2bool, default=True, help="stage 2 runs: check the upstreams' inputs")
    p.add_argument("--train", type=str2bool, default=True, help="a training stage runs: check the labels")
    p = sub.add_parser("protocol", help="run.sh assignments of a protocol's run options not given by the user")
    p.add_argument("--protocol", required=True, help="conf/protocol/<name>.yaml")
    p.add_argument("--given", default="", help="the option names the user set (utils/parse_options.sh po_given)")
    p = sub.add_parser("default_heads", help="the heads of a run that names none, for a backend")
    p.add_argument("--backend", default="ours", choices=sorted(BACKENDS))
    return ap


PLANNERS = {"train": _plan_classifiers, "score": _plan_classifiers, "fusion_train": _plan_fusion,
            "fusion_score": _plan_fusion, "caption_train": _plan_caption, "caption_score": _plan_caption}


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.cmd == "default_heads":
            print(" ".join(default_heads(a.backend)))
            return 0
        if a.cmd == "protocol":
            print(protocol_shell(load_run_protocol(a.protocol), set(a.given.split())), end="")
            return 0
        if a.cmd == "check":
            errors = check_options(a.upstreams.split(), a.heads.split(), a.tasks.split(), a.seeds.split(),
                                   a.backend, a.tasks_conf, fusion=a.fusion.split(), fusion_streams=a.fusion_streams,
                                   fusion_tasks=a.fusion_tasks.split(), caption_decoders=a.caption_decoders.split(),
                                   caption_kinds=a.caption_kinds.split() if a.caption_decoders.split() else [],
                                   caption_upstream=a.caption_upstream, dirs=[(f"--{n}", d) for n, d in a.dir],
                                   protocol=a.protocol)
            for e in errors:
                print(f"error: {e}", file=sys.stderr)
            return 1 if errors else 0
        if a.cmd == "fit":
            fit = fit_release(a.data_dir, a.upstreams.split(), a.tasks.split(), a.fusion.split(), a.fusion_streams,
                              a.fusion_tasks.split(), a.caption, a.caption_kinds.split(),
                              a.caption_upstream, set(a.given.split()), a.tasks_conf,
                              caption_asked=a.caption_asked, extract=a.extract, train=a.train)
            for note in fit.notes:
                print(note, file=sys.stderr)
            for e in fit.errors:
                print(f"error: {e}", file=sys.stderr)
            if fit.errors:
                return 1
            print("".join(f"{k}={shlex.quote(v)}\n" for k, v in fit.values.items()), end="")
            return 0
        family, lines, summary = PLANNERS[a.cmd](a, a.sets.split())
        stage = 4 if a.cmd.endswith("score") else 3
        write_job_file(a.out, JOB_MODULES[family][stage - 3], RUNS_PER_JOB[family][stage - 3], lines)
    except (PlanError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    what = "trainings" if stage == 3 else "scorings"
    print(f"{len(lines)} {'' if family in ('classifier', 'espnet') else family + ' '}{what}: {summary}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tasks of stages 3-5, declared in a YAML file (conf/tasks.yaml): what a head learns and how it is scored.

A :class:`Task` holds everything that depends on the kind of target: the label file of the data dir, the
target kind, the output size, the loss, the selection metric and metrics, the prediction-file format and the
RESULTS.md column title.  The generic package knows no corpus's label names: they come from the YAML.

Kinds (subclasses of :class:`Task` registered in ``KINDS``; the loader refuses kinds it does not know):

* ``classes`` (classification: cross-entropy on logits, softmax probabilities, WA/UA/F1);
* ``continuous`` (one value per utterance in ``range``, e.g. a sentiment score in [-2, 2]: one output, MSE
  loss, selected on val by the weighted F1 of the sign on non-zero labels; metrics of
  :mod:`etser.sentiment_metrics` with the constant predictors beside; predictions ``utt ref pred``).

    tasks = load_tasks("conf/tasks.yaml")
    task = tasks.get("speech_four")
    utts, targets, left_out = task.read_targets(Path("data/train"))
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from etser.datadir import read_table
from etser.yamlfile import read_yaml
from etser.metrics import (METRIC_NAMES, compute_metrics, confusion_text, quick_metrics, report_text,
                           write_predictions)

DEFAULT_TASKS_CONF = Path(__file__).resolve().parents[1] / "conf" / "tasks.yaml"


@dataclasses.dataclass(frozen=True)
class Task:
    """One task; subclasses implement a target kind."""

    name: str
    label_file: str                 # file name inside a data dir
    title: str                      # RESULTS.md column title
    kind: str = "classes"
    classes: tuple[str, ...] = ()

    # what selects the best epoch (on val) and what the reports show
    metric_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_select_metric: str = ""
    # scoring reads the training targets too (e.g. to fit the constant predictors beside the model)
    scored_with_train_targets = False

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def spec(self) -> dict:
        """The task as recorded in an exp dir (config.yaml ``task_spec``): enough to rebuild it."""
        return {"name": self.name, "label_file": self.label_file, "title": self.title, "kind": self.kind,
                "classes": list(self.classes), **self._extra_spec()}

    def _extra_spec(self) -> dict:
        return {}


@dataclasses.dataclass(frozen=True)
class ClassTask(Task):
    """Classification into ``classes``; utterances whose label is in ``labels`` but not a class are left out."""

    labels: tuple[str, ...] = ()    # every label the file may hold
    metric_names: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(METRIC_NAMES))
    default_select_metric: str = "ua"
    target_dtype = np.int64

    @property
    def output_size(self) -> int:
        return len(self.classes)

    def _extra_spec(self) -> dict:
        return {"labels": list(self.labels)}

    def read_targets(self, data_set_dir: Path, log: Callable[[str], None] = lambda _: None
                     ) -> tuple[list[str], np.ndarray, dict[str, int]]:
        """Utterances, class ids (N,) and ``{label: count}`` of utterances left out (label not a class)."""
        path = Path(data_set_dir) / self.label_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: task {self.name} needs {self.label_file} in {data_set_dir} "
                                    "(stage 1 writes it only when the release has that modality)")
        utts, ids, left_out = [], [], Counter()
        for utt, label in read_table(path, allow_empty_value=False).items():
            if label in self.classes:
                utts.append(utt)
                ids.append(self.classes.index(label))
            elif label in self.labels:
                left_out[label] += 1
            else:
                raise ValueError(f"{path}: utterance {utt} has unknown label {label!r} "
                                 f"(known: {', '.join(self.labels)})")
        if not utts:
            raise ValueError(f"{path}: no utterance has a label among {', '.join(self.classes)}")
        if left_out:
            log(f"{path}: {self.name} uses {len(utts)} utterances; left out {sum(left_out.values())} whose label "
                f"is not one of its {len(self.classes)} classes ("
                + ", ".join(f"{k} {v}" for k, v in sorted(left_out.items())) + ")")
        return utts, np.asarray(ids, dtype=np.int64), dict(left_out)

    def target_names(self, targets: np.ndarray) -> list[str]:
        return [self.classes[int(i)] for i in targets]

    def describe_targets(self, targets: np.ndarray) -> str:
        counts = np.bincount(targets, minlength=len(self.classes))
        return ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts))

    def check_training_targets(self, targets: np.ndarray) -> str | None:
        """A warning about the training targets, or None."""
        counts = np.bincount(targets, minlength=len(self.classes))
        if (counts == 0).any():
            return "classes with no training utterance: " + ", ".join(
                c for c, n in zip(self.classes, counts) if n == 0)
        return None

    def class_weights(self, targets: np.ndarray) -> np.ndarray:
        """Inverse frequency, mean 1 over the training utterances; an absent class gets 0."""
        counts = np.bincount(targets, minlength=len(self.classes))
        return np.where(counts > 0, len(targets) / (len(self.classes) * np.maximum(counts, 1)), 0.0)

    def loss(self, outputs, targets, weight=None, reduction: str = "mean"):
        import torch.nn.functional as F

        return F.cross_entropy(outputs, targets, weight=weight, reduction=reduction)

    def posteriors(self, outputs) -> np.ndarray:
        """Class probabilities (N, C) of the head's logits."""
        import torch

        return torch.softmax(outputs.float(), dim=-1).cpu().numpy().astype(np.float64)

    def better(self, metric: str, value: float, best: float | None) -> bool:
        """Whether ``value`` of ``metric`` beats ``best`` (None: nothing yet); NaN never wins."""
        return value == value and (best is None or best != best or value > best)

    def quick_metrics(self, targets: np.ndarray, posteriors: np.ndarray) -> dict[str, float]:
        """Metrics for choosing the best epoch (no scikit-learn import)."""
        return quick_metrics(targets, posteriors.argmax(1), len(self.classes))

    def metrics(self, targets: np.ndarray, posteriors: np.ndarray, train_targets: np.ndarray | None = None) -> dict:
        return {**compute_metrics(targets, posteriors.argmax(1), len(self.classes)), "kind": self.kind}

    def write_predictions(self, path: Path, utts: Sequence[str], targets: np.ndarray | None,
                          posteriors: np.ndarray) -> None:
        refs = self.target_names(targets) if targets is not None else None
        write_predictions(path, utts, refs, posteriors, self.classes)

    def write_reports(self, out_dir: Path, metrics: dict, title: str) -> None:
        """``confusion.txt``, ``report.txt`` and ``confusion.png`` of a decode dir."""
        from etser.plots import plot_confusion

        out_dir = Path(out_dir)
        (out_dir / "confusion.txt").write_text(confusion_text(metrics["confusion"], self.classes))
        (out_dir / "report.txt").write_text(report_text(metrics, self.classes, title))
        plot_confusion(metrics["confusion"], self.classes, out_dir / "confusion.png",
                       f"{title}\nUA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f}  "
                       f"macro-F1 {100 * metrics['macro_f1']:.1f}")


@dataclasses.dataclass(frozen=True)
class ContinuousTask(Task):
    """One continuous value per utterance (e.g. sentiment in [-2, 2]); a value outside ``range`` is an error."""

    kind: str = "continuous"
    value_range: tuple[float, float] = (-2.0, 2.0)
    metric_names: Mapping[str, str] = dataclasses.field(default_factory=lambda: {
        "f1_weighted": "WF1 (sign)", "acc2": "Acc-2", "mae": "MAE", "pearson": "r", "ccc": "CCC"})
    # the official metric (MERBench's SIMS one): weighted F1 of the sign on the non-zero labels
    default_select_metric: str = "f1_weighted"
    lower_is_better: tuple[str, ...] = ("mae",)
    target_dtype = np.float32
    scored_with_train_targets = True

    @property
    def output_size(self) -> int:
        return 1

    def _extra_spec(self) -> dict:
        return {"range": [float(x) for x in self.value_range]}

    def read_targets(self, data_set_dir: Path, log: Callable[[str], None] = lambda _: None
                     ) -> tuple[list[str], np.ndarray, dict[str, int]]:
        """Utterances and values (N,) float32 and ``{"no value": n}`` for the n utterances of the set (its
        ``utt2spk``) that the label file leaves out (no value in the release): counted and logged, never
        silently; a bad value is an error."""
        path = Path(data_set_dir) / self.label_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: task {self.name} needs {self.label_file} in {data_set_dir} "
                                    "(stage 1 writes it only when the release has that label)")
        lo, hi = self.value_range
        utts, values = [], []
        for utt, text in read_table(path, allow_empty_value=False).items():
            try:
                v = float(text)
            except ValueError:
                raise ValueError(f"{path}: utterance {utt} has {text!r}, not a number") from None
            if not np.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"{path}: utterance {utt} has {text}, outside [{lo:g}, {hi:g}]")
            utts.append(utt)
            values.append(v)
        if not utts:
            raise ValueError(f"{path}: no utterance")
        left_out = {}
        spk = Path(data_set_dir) / "utt2spk"
        if spk.is_file():
            have = set(utts)
            lacking = [u for u in read_table(spk) if u not in have]
            if lacking:
                left_out = {"no value": len(lacking)}
                log(f"{path}: {self.name} uses {len(utts)} utterances; left out {len(lacking)} of {spk} that have "
                    f"no value (first: {lacking[0]})")
        return utts, np.asarray(values, dtype=np.float32), left_out

    def describe_targets(self, targets: np.ndarray) -> str:
        t = np.asarray(targets, dtype=np.float64)
        return (f"mean {t.mean():.3f}, {int((t < 0).sum())} negative, {int((t == 0).sum())} zero, "
                f"{int((t > 0).sum())} positive")

    def check_training_targets(self, targets: np.ndarray) -> str | None:
        t = np.asarray(targets)
        return "every training value is the same" if t.size and np.all(t == t[0]) else None

    def class_weights(self, targets: np.ndarray) -> np.ndarray:
        raise ValueError(f"task {self.name}: class_weighted_loss needs classes; this task is continuous")

    def loss(self, outputs, targets, weight=None, reduction: str = "mean"):
        import torch.nn.functional as F

        return F.mse_loss(outputs[:, 0].float(), targets.float(), reduction=reduction)

    def posteriors(self, outputs) -> np.ndarray:
        """The predicted values, (N, 1)."""
        return outputs[:, :1].float().detach().cpu().numpy().astype(np.float64)

    def better(self, metric: str, value: float, best: float | None) -> bool:
        if value != value:          # NaN never wins
            return False
        if best is None or best != best:
            return True
        return value < best if metric in self.lower_is_better else value > best

    def quick_metrics(self, targets: np.ndarray, posteriors: np.ndarray) -> dict[str, float]:
        from etser.sentiment_metrics import sentiment_metrics

        return {**_fractions(sentiment_metrics(posteriors[:, 0], targets)), "num_utts": len(targets)}

    def metrics(self, targets: np.ndarray, posteriors: np.ndarray, train_targets: np.ndarray | None = None) -> dict:
        """The sentiment metrics, and (with ``train_targets``) the constant predictors' on the same labels."""
        from etser.sentiment_metrics import constant_baselines

        out = {**self.quick_metrics(targets, posteriors), "kind": self.kind}
        if train_targets is not None:
            out["constant"] = {k: _fractions(v) for k, v in constant_baselines(train_targets, targets).items()}
        return out

    def write_predictions(self, path: Path, utts: Sequence[str], targets: np.ndarray | None,
                          posteriors: np.ndarray) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("# utt ref pred\n" if targets is not None else "# utt pred\n")
            for i, u in enumerate(utts):
                ref = f" {float(targets[i]):.4f}" if targets is not None else ""
                f.write(f"{u}{ref} {float(posteriors[i, 0]):.6f}\n")
        tmp.replace(path)

    def write_reports(self, out_dir: Path, metrics: dict, title: str) -> None:
        """``report.txt``: the metrics and, when scored with them, the constant predictors'."""
        lines = [title, "", f"{'predictor':<14}" + "".join(f"{self.metric_names[k]:>12}" for k in self.metric_names)]
        rows = [("model", metrics)] + list((metrics.get("constant") or {}).items())
        for name, m in rows:
            lines.append(f"{name:<14}" + "".join(
                f"{(100 if k in PERCENT_METRICS else 1) * m[k]:>12.3f}" for k in self.metric_names))
        lines += ["", "Acc-2 / WF1 (sign): pred > 0 against label > 0 on the non-zero labels, in %; MAE, Pearson r "
                  "and CCC over all utterances."]
        (Path(out_dir) / "report.txt").write_text("\n".join(lines) + "\n")


# sentiment metrics that are shares (fractions in metrics.json, % in reports, as WA/UA); MAE, r, CCC are not
PERCENT_METRICS = ("acc2", "f1_weighted")


def _fractions(m: Mapping) -> dict:
    return {k: (v / 100 if k in PERCENT_METRICS else v) for k, v in m.items()}


KINDS: dict[str, type[Task]] = {"classes": ClassTask, "continuous": ContinuousTask}


def task_from_spec(spec: Mapping, where: str = "task") -> Task:
    """A Task from one YAML entry (or the ``task_spec`` recorded in an exp dir)."""
    spec = dict(spec)
    name = spec.get("name")
    kind = spec.get("kind", "classes")
    if kind not in KINDS:
        raise ValueError(f"{where}: task {name}: kind {kind!r} is not implemented (known kinds: {', '.join(KINDS)})")
    for key in ("label_file",):
        if not spec.get(key):
            raise ValueError(f"{where}: task {name} has no {key}")
    known = {"name", "label_file", "title", "kind", "classes", "labels", "range"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"{where}: task {name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    common = dict(name=str(name), label_file=str(spec["label_file"]), title=str(spec.get("title") or name),
                  kind=kind)
    if kind == "classes":
        classes = tuple(str(c) for c in spec.get("classes") or ())
        labels = tuple(str(c) for c in spec.get("labels") or classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"{where}: task {name}: classes must be 2 or more distinct names, got {list(classes)}")
        missing = [c for c in classes if c not in labels]
        if missing:
            raise ValueError(f"{where}: task {name}: classes {missing} are not among its labels {list(labels)}")
        return ClassTask(**common, classes=classes, labels=labels)
    if kind == "continuous":
        rng = spec.get("range", [-2.0, 2.0])
        try:
            lo, hi = (float(x) for x in rng)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: task {name}: range must be [low, high], got {rng!r}") from None
        if not lo < hi:
            raise ValueError(f"{where}: task {name}: range must be [low, high] with low < high, got {rng!r}")
        return ContinuousTask(**common, value_range=(lo, hi))
    return KINDS[kind](**common)


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The tasks of one YAML file and each modality's default task list."""

    path: str
    tasks: Mapping[str, Task]
    defaults: Mapping[str, tuple[str, ...]]

    @property
    def names(self) -> list[str]:
        return list(self.tasks)

    def get(self, name: str) -> Task:
        if name not in self.tasks:
            raise ValueError(f"unknown task {name!r} (in {self.path}); known tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def default_tasks(self, modality: str) -> list[str]:
        if modality not in self.defaults:
            raise ValueError(f"{self.path}: no default task list for modality {modality!r} (defaults for: "
                             f"{', '.join(self.defaults)}); give the tasks explicitly")
        return list(self.defaults[modality])


_LOADED: dict[tuple[str, float], TaskSet] = {}


def load_tasks(path: str | Path | None = None) -> TaskSet:
    """Read a tasks YAML (default: the repo's conf/tasks.yaml); cached per path and modification time."""
    path = Path(path) if path is not None else DEFAULT_TASKS_CONF
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the tasks configuration (--tasks_conf)")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _LOADED:
        return _LOADED[key]
    doc = read_yaml(path) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not doc["tasks"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'tasks' mapping")
    tasks = {str(n): task_from_spec({**(s or {}), "name": str(n)}, str(path)) for n, s in doc["tasks"].items()}
    defaults = {}
    for modality, names in (doc.get("defaults") or {}).items():
        bad = [n for n in names or () if n not in tasks]
        if bad:
            raise ValueError(f"{path}: defaults.{modality} names unknown task(s) {', '.join(bad)}")
        defaults[str(modality)] = tuple(names or ())
    _LOADED[key] = TaskSet(str(path), tasks, defaults)
    return _LOADED[key]


def get_task(name: str, tasks_conf: str | Path | None = None) -> Task:
    """``speech_four`` -> its Task from ``tasks_conf`` (default: conf/tasks.yaml)."""
    return load_tasks(tasks_conf).get(name)

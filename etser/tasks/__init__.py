"""Tasks of stages 3-5, declared in a YAML file (conf/tasks.yaml): what a head learns and how it is scored.

A :class:`Task` holds everything that depends on the kind of target: the label file of the data dir, the
output size, the loss, the selection metric and metrics, the prediction-file format and the RESULTS.md
columns.  The generic package knows no corpus's label names: they come from the YAML.

A kind is one module of this package that registers its :class:`Task` subclass with ``@register_kind(name)``
(the loader refuses kinds it does not know); the modules are found by listing the package, so a new kind is
one new file.  Today: ``classes`` (:mod:`etser.tasks.classes`), ``continuous`` (:mod:`etser.tasks.continuous`)
and ``caption`` (:mod:`etser.tasks.caption`).  A new task of a known kind is YAML only.

    tasks = load_tasks("conf/tasks.yaml")
    task = tasks.get("speech_four")
    utts, targets, left_out = task.read_targets(Path("data/train"))
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar, Mapping

from etser.yamlfile import read_yaml

DEFAULT_TASKS_CONF = Path(__file__).resolve().parents[2] / "conf" / "tasks.yaml"
COMMON_KEYS = ("name", "label_file", "title", "kind", "classes")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task; a subclass per kind implements its targets, loss, metrics and reports.

    Class attributes of a kind: ``kind`` (its registered name), ``metric_names`` (metric key -> column title,
    in report order), ``default_select_metric`` (what selects the best epoch on val unless the training
    config says otherwise), ``table_metric`` (the one figure of a results table cell), ``spec_keys`` (its
    own YAML keys), ``scored_with_train_targets`` (scoring also reads the training targets, e.g. to fit the
    constant predictors beside the model), ``model_family`` (the registry family of the models that learn it:
    ``head`` for the classifier and regression heads and fusion models, ``decoder`` for captioning)."""

    name: str
    label_file: str                 # file name inside a data dir
    title: str                      # RESULTS.md column title
    classes: tuple[str, ...] = ()

    kind: ClassVar[str] = ""
    metric_names: ClassVar[Mapping[str, str]] = {}
    default_select_metric: ClassVar[str] = ""
    table_metric: ClassVar[str] = ""
    lower_is_better: ClassVar[tuple[str, ...]] = ()   # metrics where a smaller value is better (e.g. MAE)
    percent_metrics: ClassVar[tuple[str, ...]] = ()   # metrics that are shares (fractions, shown in %)
    # RESULTS.md: rows in the per-metric tables of conf/results.yaml (WA, UA, F1 of classifiers) or, when
    # False, in a table of the task's own with the kind's metrics as columns
    metric_tables: ClassVar[bool] = False
    spec_keys: ClassVar[tuple[str, ...]] = ()
    scored_with_train_targets: ClassVar[bool] = False
    model_family: ClassVar[str] = "head"

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def spec(self) -> dict:
        """The task as recorded in an exp dir (config.yaml ``task_spec``): enough to rebuild it."""
        return {"name": self.name, "label_file": self.label_file, "title": self.title, "kind": self.kind,
                "classes": list(self.classes), **self._extra_spec()}

    def _extra_spec(self) -> dict:
        return {}

    @classmethod
    def from_spec(cls, common: dict, spec: Mapping, where: str) -> "Task":
        """The task of one YAML entry; ``common`` holds name, label_file and title, checked already."""
        return cls(**common)

    def select_metric(self, configured) -> str:
        """The metric selecting the best epoch: the config's, else the kind's default.  The config gives one
        name (it applies to the kinds that have that metric: a head config saying ``ua`` trains a continuous
        task on its default) or a mapping kind -> name (a kind not named takes its default); a name that no
        kind has, or a mapping's name this kind has not, is an error."""
        if isinstance(configured, Mapping):
            configured = configured.get(self.kind)
        elif configured not in self.metric_names and any(configured in k.metric_names for k in KINDS.values()):
            configured = None
        metric = configured or self.default_select_metric
        if metric not in self.metric_names:
            raise ValueError(f"select_metric must be one of {', '.join(self.metric_names)} for task {self.name} "
                             f"(kind {self.kind}), got {metric!r}")
        return metric


KINDS: dict[str, type[Task]] = {}


def register_kind(name: str):
    """Class decorator of a kind's module: ``@register_kind("classes")``."""
    def add(cls: type[Task]) -> type[Task]:
        if name in KINDS and KINDS[name] is not cls:
            raise ValueError(f"task kind {name!r} registered twice ({KINDS[name].__module__}, {cls.__module__})")
        cls.kind = name
        KINDS[name] = cls
        return cls
    return add


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def kind_class(kind: str, where: str = "task") -> type[Task]:
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not implemented (known kinds: {', '.join(KINDS)})")
    return KINDS[kind]


def task_from_spec(spec: Mapping, where: str = "task") -> Task:
    """A Task from one YAML entry (or the ``task_spec`` recorded in an exp dir)."""
    spec = dict(spec)
    name = spec.get("name")
    cls = kind_class(spec.get("kind", "classes"), f"{where}: task {name}")
    if not spec.get("label_file"):
        raise ValueError(f"{where}: task {name} has no label_file")
    known = {*COMMON_KEYS, *cls.spec_keys}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"{where}: task {name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    common = dict(name=str(name), label_file=str(spec["label_file"]), title=str(spec.get("title") or name))
    return cls.from_spec(common, spec, where)


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """The tasks of one YAML file, each modality's default task list and the tasks of RESULTS.md's
    multimodal sections (``multimodal``: ``emotion``, the columns of the multimodal emotion table and the
    discrete columns of the sentiment table; ``sentiment``, its continuous column)."""

    path: str
    tasks: Mapping[str, Task]
    defaults: Mapping[str, tuple[str, ...]]
    multimodal: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

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
    multimodal = {}
    for section, names in (doc.get("multimodal") or {}).items():
        names = [names] if isinstance(names, str) else list(names or ())
        bad = [n for n in names if n not in tasks]
        if bad:
            raise ValueError(f"{path}: multimodal.{section} names unknown task(s) {', '.join(bad)}")
        multimodal[str(section)] = tuple(names)
    _LOADED[key] = TaskSet(str(path), tasks, defaults, multimodal)
    return _LOADED[key]


def get_task(name: str, tasks_conf: str | Path | None = None) -> Task:
    """``speech_four`` -> its Task from ``tasks_conf`` (default: conf/tasks.yaml)."""
    return load_tasks(tasks_conf).get(name)


_discover()

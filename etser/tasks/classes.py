"""Task kind ``classes``: classification into named classes (cross-entropy on logits, softmax probabilities,
WA / UA / macro-F1 / weighted-F1, confusion matrix); utterances whose label is a known label but not one of
the task's classes are left out (counted and logged)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np

from etser.datadir import read_table
from etser.metrics import (METRIC_NAMES, compute_metrics, confusion_text, quick_metrics, report_text,
                           write_predictions)
from etser.tasks import Task, register_kind


@register_kind("classes")
@dataclasses.dataclass(frozen=True)
class ClassTask(Task):
    """Classification into ``classes``; utterances whose label is in ``labels`` but not a class are left out."""

    labels: tuple[str, ...] = ()    # every label the file may hold
    metric_names: ClassVar[Mapping[str, str]] = dict(METRIC_NAMES)
    default_select_metric: ClassVar[str] = "ua"
    table_metric: ClassVar[str] = "weighted_f1"
    percent_metrics: ClassVar[tuple[str, ...]] = tuple(METRIC_NAMES)
    metric_tables: ClassVar[bool] = True
    spec_keys: ClassVar[tuple[str, ...]] = ("labels",)
    target_dtype = np.int64

    @property
    def output_size(self) -> int:
        return len(self.classes)

    def _extra_spec(self) -> dict:
        return {"labels": list(self.labels)}

    @classmethod
    def from_spec(cls, common: dict, spec: Mapping, where: str) -> "ClassTask":
        name = common["name"]
        classes = tuple(str(c) for c in spec.get("classes") or ())
        labels = tuple(str(c) for c in spec.get("labels") or classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"{where}: task {name}: classes must be 2 or more distinct names, got {list(classes)}")
        missing = [c for c in classes if c not in labels]
        if missing:
            raise ValueError(f"{where}: task {name}: classes {missing} are not among its labels {list(labels)}")
        return cls(**common, classes=classes, labels=labels)

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
        from etser.report.plots import plot_confusion

        out_dir = Path(out_dir)
        (out_dir / "confusion.txt").write_text(confusion_text(metrics["confusion"], self.classes))
        (out_dir / "report.txt").write_text(report_text(metrics, self.classes, title))
        plot_confusion(metrics["confusion"], self.classes, out_dir / "confusion.png",
                       f"{title}\nUA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f}  "
                       f"macro-F1 {100 * metrics['macro_f1']:.1f}")

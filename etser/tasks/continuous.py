"""Task kind ``continuous``: one value per utterance in ``range`` (e.g. a sentiment score in [-2, 2]): one
output, MSE loss, selected on val by the weighted F1 of the sign on non-zero labels; metrics of
:mod:`etser.sentiment_metrics` with the constant predictors beside; predictions ``utt ref pred``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np

from etser.datadir import read_table
from etser.tasks import Task, register_kind


@register_kind("continuous")
@dataclasses.dataclass(frozen=True)
class ContinuousTask(Task):
    """One continuous value per utterance (e.g. sentiment in [-2, 2]); a value outside ``range`` is an error."""

    value_range: tuple[float, float] = (-2.0, 2.0)
    # the scale's neutral point: the sign metrics (Acc-2, WF1) and the all-negative predictor read values
    # relative to it (e.g. 3 for arousal on 1..5); MAE, r and CCC do not depend on it
    center: float = 0.0
    metric_names: ClassVar[Mapping[str, str]] = {
        "f1_weighted": "WF1 (sign)", "acc2": "Acc-2", "mae": "MAE", "pearson": "r", "ccc": "CCC"}
    # the official metric (MERBench's SIMS one): weighted F1 of the sign on the non-zero labels
    default_select_metric: ClassVar[str] = "f1_weighted"
    table_metric: ClassVar[str] = "f1_weighted"
    # shares: fractions in metrics.json, % in reports (as WA/UA); MAE, r, CCC are not
    percent_metrics: ClassVar[tuple[str, ...]] = ("acc2", "f1_weighted")
    spec_keys: ClassVar[tuple[str, ...]] = ("range", "center")
    lower_is_better: ClassVar[tuple[str, ...]] = ("mae",)
    target_dtype = np.float32
    scored_with_train_targets: ClassVar[bool] = True

    @property
    def output_size(self) -> int:
        return 1

    def _extra_spec(self) -> dict:
        spec = {"range": [float(x) for x in self.value_range]}
        return {**spec, "center": self.center} if self.center else spec   # the hash of a centre-0 task unchanged

    @classmethod
    def from_spec(cls, common: dict, spec: Mapping, where: str) -> "ContinuousTask":
        rng = spec.get("range", [-2.0, 2.0])
        try:
            lo, hi = (float(x) for x in rng)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: task {common['name']}: range must be [low, high], got {rng!r}") from None
        if not lo < hi:
            raise ValueError(f"{where}: task {common['name']}: range must be [low, high] with low < high, "
                             f"got {rng!r}")
        try:
            center = float(spec.get("center", 0.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: task {common['name']}: center must be a number, got {spec['center']!r}") from None
        if not lo < center < hi:
            raise ValueError(f"{where}: task {common['name']}: center {center:g} must lie inside range {rng!r}")
        return cls(**common, value_range=(lo, hi), center=center)

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

        # the model predicts the offset from the centre: a head starts near 0, which is the centre then, not
        # a value far below a range such as [1, 5]
        return F.mse_loss(outputs[:, 0].float(), targets.float() - self.center, reduction=reduction)

    def posteriors(self, outputs) -> np.ndarray:
        """The predicted values, (N, 1)."""
        return outputs[:, :1].float().detach().cpu().numpy().astype(np.float64) + self.center

    def better(self, metric: str, value: float, best: float | None) -> bool:
        if value != value:          # NaN never wins
            return False
        if best is None or best != best:
            return True
        return value < best if metric in self.lower_is_better else value > best

    def quick_metrics(self, targets: np.ndarray, posteriors: np.ndarray) -> dict[str, float]:
        from etser.sentiment_metrics import sentiment_metrics

        pred, ref = posteriors[:, 0], targets
        if self.center:
            pred, ref = pred - self.center, np.asarray(ref, dtype=np.float64) - self.center
        return {**_fractions(sentiment_metrics(pred, ref)), "num_utts": len(targets)}

    def metrics(self, targets: np.ndarray, posteriors: np.ndarray, train_targets: np.ndarray | None = None) -> dict:
        """The sentiment metrics, and (with ``train_targets``) the constant predictors' on the same labels."""
        from etser.sentiment_metrics import constant_baselines

        out = {**self.quick_metrics(targets, posteriors), "kind": self.kind}
        if train_targets is not None:
            base = constant_baselines(np.asarray(train_targets, dtype=np.float64) - self.center,
                                      np.asarray(targets, dtype=np.float64) - self.center)
            out["constant"] = {k: {**_fractions(v), "value": v["value"] + self.center} for k, v in base.items()}
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
                f"{(100 if k in self.percent_metrics else 1) * m[k]:>12.3f}" for k in self.metric_names))
        lines += ["", "Acc-2 / WF1 (sign): pred > 0 against label > 0 on the non-zero labels, in %; MAE, Pearson r "
                  "and CCC over all utterances."]
        (Path(out_dir) / "report.txt").write_text("\n".join(lines) + "\n")


def _fractions(m: Mapping) -> dict:
    return {k: (v / 100 if k in ContinuousTask.percent_metrics else v) for k, v in m.items()}

"""The RESULTS.md sections of multimodal fusion and sentiment (the seeds' tables 2 and 3) and of missing
modalities, from the ``metrics.json`` (and ``missing.json``) that :func:`etser.report.results.find_metrics` collects.

* Multimodal emotion recognition: Features, Algorithm, Fusion level, Multimodal(Four), Multimodal(All), Mean —
  weighted-F1 first (the metric comparable with the seeds' numbers: the official code computes accuracy and
  weighted-F1 only), then UA and WA; and the best single-modality row of each column for comparison.
* Sentiment: Text, Speech, Visual (the upstream of each modality), Discrete(Four), Discrete(All) (weighted-F1
  of ``multi_four`` / ``multi_all``), Continuous (weighted-F1 of the sign on non-zero labels), Mean; the
  constant predictors' row; then Acc-2, MAE, Pearson r and CCC beside the constants.
* Missing modalities: per fusion experiment and task, the metric with each subset of modalities present.

Cells are mean ± sample std over seeds, in percent (MAE, r and CCC as plain numbers).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from etser.metrics import COUNT_NOTE, count_note, stale_note, varying_counts
from etser.report.found import fused
from etser.report.protocols import protocol_lines, run_protocol, sentiment_discrete
from etser.tasks import kind_class, load_tasks

MODALITY_COLUMNS = (("text", "Text"), ("speech", "Speech"), ("visual", "Visual"))


def _cell(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    v = scale * np.asarray(values, dtype=float)
    if len(v) == 0:
        return "–"
    if np.isnan(v).all():
        return "NaN"
    return f"{v.mean():.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _main_metric(m: dict) -> str:
    return kind_class(m.get("kind", "classes")).table_metric


def _features(m: dict) -> str:
    ups = m.get("stream_upstreams") or {}
    return " + ".join(ups.values()) if ups else str(m.get("upstream", m["tag"]))


def _group(metrics: list[dict]) -> dict:
    """(tag, algo) -> task -> [metrics of each seed]."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for m in metrics:
        out[(m["tag"], m.get("algo") or m["head"])][m["task"]].append(m)
    return out


def multimodal_tasks(tasks_conf=None) -> tuple[tuple[str, ...], str | None]:
    """The tasks of the multimodal sections, as the tasks YAML's ``multimodal`` declares them: the emotion
    columns and the sentiment task (None: no sentiment table)."""
    try:
        sections = load_tasks(tasks_conf).multimodal
    except (FileNotFoundError, ValueError):
        return (), None
    return tuple(sections.get("emotion", ())), next(iter(sections.get("sentiment", ())), None)


def _titles(tasks_conf) -> dict:
    try:
        return {n: t.title for n, t in load_tasks(tasks_conf).tasks.items()}
    except (FileNotFoundError, ValueError):
        return {}


def fusion_sections(metrics: list[dict], set_name: str = "test", tasks_conf=None, protocol_dir=None) -> list[str]:
    fusion = [m for m in metrics if fused(m)]
    unimodal = [m for m in metrics if not fused(m) and kind_class(m.get("kind", "classes")).metric_tables]
    multi, senti = multimodal_tasks(tasks_conf)
    sentiment = [m for m in metrics if m["task"] == senti]
    if not fusion and not sentiment:
        return []
    titles = _titles(tasks_conf)
    varying = varying_counts(metrics)
    lines: list[str] = []
    lines += _er_table(fusion, unimodal, titles, varying, multi, protocol_dir)
    lines += _sentiment_table(metrics, sentiment, titles, varying, multi, senti, protocol_dir)
    lines += _missing_table(fusion, titles, protocol_dir)
    return lines


def _noted(runs: list[dict], task: str, varying: set, values: Sequence[float] | None = None, **fmt) -> str:
    """A cell of ``runs``, with the utterances they were scored on when ``task``'s scorings differ in that."""
    text = _cell([r[_main_metric(r)] for r in runs] if values is None else values, **fmt)
    return text + (count_note(runs) if runs and task in varying else "") + stale_note(runs)


def _er_table(fusion: list[dict], unimodal: list[dict], titles: dict, varying: set, multi: Sequence[str],
              protocol_dir=None) -> list[str]:
    rows = _group([m for m in fusion if m["task"] in multi])
    if not rows:
        return []
    over, under = protocol_lines([m for row in rows.values() for ms in row.values() for m in ms], protocol_dir)
    cols = [t for t in multi if any(t in r for r in rows.values())]
    tt = [titles.get(t, t).replace("Multi(", "Multimodal(") for t in cols]
    lines = ["## Multimodal emotion recognition (the seeds' Table 2)", "",
             "Weighted-F1 first: the metric comparable with the seeds' numbers (the official code computes "
             "accuracy and weighted-F1 only; its best epoch is chosen on val weighted-F1, as here). UA and WA "
             "beside. Features: the upstream of each stream.", "", *over] + (
                 [COUNT_NOTE, ""] if varying & set(cols) else [])
    head = ["Features", "Algorithm", "Fusion level", *[f"{t} WF1" for t in tt], "Mean WF1",
            *[f"{t} UA" for t in tt], *[f"{t} WA" for t in tt]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (tag, algo), row in sorted(rows.items()):
        first = next(iter(row.values()))[0]
        wf1 = [_noted(row.get(t, []), t, varying, [r["weighted_f1"] for r in row.get(t, [])]) for t in cols]
        means = [np.mean([r["weighted_f1"] for r in row[t]]) for t in cols if t in row]
        mean = f"{100 * np.mean(means):.2f}" if len(means) == len(cols) else "–"
        ua = [_noted(row.get(t, []), t, varying, [r["ua"] for r in row.get(t, [])]) for t in cols]
        wa = [_noted(row.get(t, []), t, varying, [r["wa"] for r in row.get(t, [])]) for t in cols]
        lines.append(f"| {_features(first)} | {algo} | {first.get('fusion_level', '?')} | " +
                     " | ".join([*wf1, mean, *ua, *wa]) + " |")
    lines += ["", *under]
    # the best single modality of each column, to read the fusion gain against
    single = _group([m for m in unimodal if m["task"] in cols])
    best = []
    for t, title in zip(cols, tt):
        cand = [(np.mean([r["ua"] for r in row[t]]), key, row[t]) for key, row in single.items() if t in row]
        if cand:
            ua, (tag, head), runs = max(cand, key=lambda c: c[0])
            best.append(f"{title}: {runs[0].get('upstream', tag)} ({runs[0]['modality']}, {head}) UA "
                        f"{_cell([r['ua'] for r in runs])}, WF1 {_cell([r['weighted_f1'] for r in runs])}"
                        + (count_note(runs) if t in varying else "") + stale_note(runs))
    if best:
        lines += ["Best single modality (by mean UA) on the same set: " + "; ".join(best) + ".", ""]
    return lines


def _sentiment_table(metrics: list[dict], sentiment: list[dict], titles: dict, varying: set, multi: Sequence[str],
                     senti: str, protocol_dir=None) -> list[str]:
    if not sentiment:
        return []
    keys = sorted({(m["tag"], m.get("algo") or m["head"]) for m in sentiment})
    # the Discrete columns of a row: its own algorithm's Multi runs, or the algorithm its protocol names
    # (official: LMF, as the official run.sh trains its MM rows), of the same features and protocol
    discrete = {}
    for key in keys:
        first = next(m for m in sentiment if (m["tag"], m.get("algo") or m["head"]) == key)
        discrete[key] = (key[0], sentiment_discrete(first, protocol_dir) or key[1], run_protocol(first))
    groups = _group([m for m in metrics if (m["tag"], m.get("algo") or m["head"]) in keys])
    multi_runs = _group([m for m in metrics if m["task"] in multi])
    over, under = protocol_lines([m for key in keys for ms in groups[key].values() for m in ms], protocol_dir)
    lines = ["## Multimodal sentiment analysis (the seeds' Table 3)", "",
             "Discrete(Four) / Discrete(All): weighted-F1 of the multimodal labels (`multi_four` / `multi_all`); "
             "Continuous: weighted-F1 of the sign on the non-zero labels of `utt2sentiment` (the official metric, "
             "MERBench's). A constant prediction already scores high on Continuous when most labels have one "
             "sign: its row is beside (fitted on the training labels).", ""] + (
                 [COUNT_NOTE, ""] if varying & {*multi, senti} else []) + over
    borrowed = sorted({f"{key[1]}: {src[1]}" for key, src in discrete.items() if src[1] != key[1]})
    if borrowed:
        lines += ["Discrete columns from another algorithm's Multi runs, as the rows' protocol says "
                  f"(`report: sentiment_discrete`): {', '.join(borrowed)}.", ""]
    head = ["Text", "Speech", "Visual", "Algorithm", "Discrete(Four)", "Discrete(All)", "Continuous", "Mean"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        row = groups[key]
        first = row[senti][0]
        ups = first.get("stream_upstreams") or {first.get("modality", "speech"): first.get("upstream", key[0])}
        mods = first.get("stream_modalities") or {n: n for n in ups}
        by_mod = {mods.get(n, n): u for n, u in ups.items()}
        tag, src, protocol = discrete[key]
        source = {t: [r for r in multi_runs.get((tag, src), {}).get(t, []) if run_protocol(r) == protocol]
                  for t in multi} | {senti: row.get(senti, [])}
        vals = {t: [r[_main_metric(r)] for r in source[t]] for t in (*multi, senti)}
        cells = [_noted(source[t], t, varying, vals[t]) for t in (*multi, senti)]
        mean = (f"{100 * np.mean([np.mean(v) for v in vals.values()]):.2f}" if all(vals.values()) else "–")
        lines.append("| " + " | ".join([*(by_mod.get(m, "–") for m, _ in MODALITY_COLUMNS), key[1], *cells, mean])
                     + " |")
    constants = defaultdict(list)
    for m in sentiment:
        for name, c in (m.get("constant") or {}).items():
            constants[name].append(c)
    for name, cs in sorted(constants.items()):
        lines.append(f"| – | – | – | constant {name} ({np.mean([c['value'] for c in cs]):+.3f}) | – | – | "
                     f"{_cell([c['f1_weighted'] for c in cs])} | – |")
    lines += ["", "Continuous in detail (Acc-2 and WF1 of the sign in %, MAE, Pearson r, CCC):", "",
              "| Features | Algorithm | Acc-2 | WF1 | MAE | r | CCC |", "|---|---|---|---|---|---|---|"]
    for key in keys:
        runs = groups[key][senti]
        lines.append(f"| {_features(runs[0])} | {key[1]} | {_cell([r['acc2'] for r in runs])} | "
                     f"{_noted(runs, senti, varying)} | {_cell([r['mae'] for r in runs], 1, 3)} | "
                     f"{_cell([r['pearson'] for r in runs], 1, 3)} | {_cell([r['ccc'] for r in runs], 1, 3)} |")
    for name, cs in sorted(constants.items()):
        lines.append(f"| constant {name} | – | {_cell([c['acc2'] for c in cs])} | {_cell([c['f1_weighted'] for c in cs])} "
                     f"| {_cell([c['mae'] for c in cs], 1, 3)} | {_cell([c['pearson'] for c in cs], 1, 3)} | "
                     f"{_cell([c['ccc'] for c in cs], 1, 3)} |")
    return lines + ["", *under]


def _missing_table(fusion: list[dict], titles: dict, protocol_dir=None) -> list[str]:
    with_missing = [m for m in fusion if m.get("missing")]
    if not with_missing:
        return []
    over, under = protocol_lines(with_missing, protocol_dir)
    patterns = sorted({p for m in with_missing for p in m["missing"]}, key=lambda p: (-p.count("+"), p))
    groups: dict = defaultdict(list)
    for m in with_missing:
        groups[(_features(m), m.get("algo") or m["head"], m["task"])].append(m)
    lines = ["## Missing modalities", "",
             "Each fusion model scored with only the listed modalities present (the others marked absent: "
             "dropped or zeroed per algorithm, docs/fusion.md). Weighted-F1 (sentiment: of the sign), %.", "",
             *over]
    # an utterance left with none of a pattern's modalities is skipped there: a task's counts can differ by pattern
    differ = varying_counts({"task": m["task"], "num_utts": s["num_utts"]} for m in with_missing
                            for s in m["missing"].values() if "num_utts" in s)
    if differ:
        lines += [COUNT_NOTE, ""]
    head = ["Features", "Algorithm", "Task", *patterns]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (feats, algo, task), runs in sorted(groups.items()):
        cells = []
        for p in patterns:
            pairs = [(r["missing"][p], r) for r in runs if p in r["missing"]]
            cells.append(_cell([s[_main_metric(r)] for s, r in pairs])
                         + (count_note([s for s, _ in pairs]) if pairs and task in differ else "")
                         + stale_note([r for _, r in pairs]))
        lines.append(f"| {feats} | {algo} | {titles.get(task, task)} | " + " | ".join(cells) + " |")
    return lines + ["", *under]

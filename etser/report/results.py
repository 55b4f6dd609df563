"""Stage 5: ``exp/RESULTS.md`` from every scored experiment, and the paired bootstrap test.

    python -m etser.report.results [--exp exp] [--out exp/RESULTS.md] [--set test]
    python -m etser.report.results bootstrap SYSTEM_A SYSTEM_B [--set test] [--num_samples 10000] [--seed 0]

RESULTS.md has, per metric, the tables of ``--results_conf`` (conf/results.yaml): each has a title, the
modality of its rows' features and its columns (task names; titles from ``--tasks_conf``) and a Mean; rows
are upstream x head of the experiments of that modality (recorded at training from the features'
meta.json); each cell the mean ± sample std over seeds.  It is generated from
``exp/<tag>/<head>/<task>/seed<N>/decode_<set>/metrics.json`` and never typed by hand.

A SYSTEM for the bootstrap is an exp dir of one seed (``.../seed1``) or of a task (``.../speech_four``: all
its seeds, the statistic being the mean over seeds, as in the tables).  Both systems must have scored the
same utterances with the same references.  Each of ``num_samples`` resamples draws the utterances with
replacement (the same draw for both systems) and computes the metric difference A - B; the 95% interval is
the 2.5/97.5 percentiles of those differences, and the two-sided p-value the share of resampled
differences at least as far from the observed one as the observed one is from 0 (the null distribution
is the bootstrap distribution shifted to 0), with +1 smoothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from etser.metrics import (COUNT_NOTE, METRIC_NAMES, confusion_metrics, count_note, read_predictions, stale_note,
                           varying_counts)
from etser.report.found import find_metrics  # noqa: F401  (results.find_metrics: the reader of stage 4's outputs)
from etser.report.fusion_results import fused, fusion_sections, multimodal_tasks
from etser.tasks import kind_class, load_tasks
from etser.yamlfile import read_yaml

DEFAULT_RESULTS_CONF = Path(__file__).resolve().parents[2] / "conf" / "results.yaml"

DEFINITIONS = {
    "ua": "UA (unweighted accuracy) = mean over classes of recall (correct / reference utterances of the class), "
          "over the classes present in the test references; = balanced accuracy.",
    "wa": "WA (weighted accuracy) = correct / all test utterances (plain accuracy).",
    "macro_f1": "macro-F1 = unweighted mean of per-class F1 over the classes in the references or predictions "
                "(a class never predicted has F1 0 and counts).",
    "weighted_f1": "weighted-F1 = per-class F1 weighted by the number of reference utterances of the class "
                   "(the metric of the corpus's official results).",
}
TABLE_ORDER = ("ua", "wa", "macro_f1", "weighted_f1")
# the official code computes accuracy and weighted F1 only: those are comparable with the seeds' numbers
OFFICIAL_ORDER = ("weighted_f1", "wa", "ua", "macro_f1")
OFFICIAL_HEADS = ("paper",)


# ---------------------------------------------------------------- collecting

def _cell(values: Sequence[float], n_expected: int) -> str:
    v = 100 * np.asarray(values, dtype=float)
    text = f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"
    return text + (f" (n={len(v)})" if len(v) != n_expected else "")


def load_tables(path: Path | None = None) -> list[dict]:
    """The tables of a results YAML: ``[{title, modality, columns, mean}]``."""
    path = Path(path) if path is not None else DEFAULT_RESULTS_CONF
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the results tables configuration (--results_conf)")
    doc = read_yaml(path) or {}
    tables = doc.get("tables") if isinstance(doc, dict) else None
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'tables' list")
    out = []
    for i, t in enumerate(tables):
        missing = [k for k in ("title", "modality", "columns") if not (t or {}).get(k)]
        if missing:
            raise ValueError(f"{path}: table {i + 1} lacks {', '.join(missing)}")
        out.append({"title": str(t["title"]), "modality": str(t["modality"]),
                    "columns": [str(c) for c in t["columns"]], "mean": bool(t.get("mean", True))})
    modalities = [t["modality"] for t in out]
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"{path}: two tables have the same modality ({', '.join(modalities)})")
    return out


def summarize(metrics: list[dict], tables: list[dict]) -> list[dict]:
    """Per table that has rows: ``{title, columns, mean_columns, rows, cells}``, cells =
    {(tag, head): {task: [metrics of each seed]}}.  Modalities without a table get one of their own."""
    by_modality: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for m in metrics:
        by_modality[m["modality"]][(m["tag"], m["head"])][m["task"]].append(m)
    specs = list(tables) + [{"title": mod.capitalize(), "modality": mod, "columns": [], "mean": False}
                            for mod in sorted(by_modality) if mod not in {t["modality"] for t in tables}]
    out = []
    for spec in specs:
        cells = by_modality.get(spec["modality"])
        if not cells:
            continue
        tasks = {t for row in cells.values() for t in row}
        # the listed columns some row has, then the rows' other tasks; a Mean only when every listed one is there
        columns = [t for t in spec["columns"] if t in tasks] + sorted(tasks - set(spec["columns"]))
        complete = spec["mean"] and spec["columns"] and all(t in tasks for t in spec["columns"])
        mean_columns = list(spec["columns"]) if complete else []
        out.append({"title": spec["title"], "modality": spec["modality"], "columns": columns,
                    "mean_columns": mean_columns, "rows": sorted(cells), "cells": cells})
    return out


def _titles(table: dict, task_titles: dict) -> list[str]:
    return [task_titles.get(t, t) for t in table["columns"]]


def metric_table(table: dict, metric: str, task_titles: dict, varying: set = frozenset()) -> list[str]:
    """One table's lines; the cells of a task in ``varying`` say how many utterances they were scored on."""
    cells_of, columns, mean_columns = table["cells"], table["columns"], table["mean_columns"]
    n_expected = max((len(v) for row in cells_of.values() for v in row.values()), default=1)
    head = ["Upstream (tag)", "Head", *_titles(table, task_titles)] + (["Mean"] if mean_columns else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tag, head_name in table["rows"]:
        row = cells_of[(tag, head_name)]
        cells, means = [], []
        for t in columns:
            runs = row.get(t, [])
            cells.append(_cell([r[metric] for r in runs], n_expected) + (count_note(runs) if t in varying else "")
                         + stale_note(runs) if runs else "–")
            if t in mean_columns and runs:
                means.append(np.mean([r[metric] for r in runs]))
        if mean_columns:
            cells.append(f"{100 * np.mean(means):.2f}" if len(means) == len(mean_columns) else "–")
        upstream = row[next(iter(row))][0].get("upstream", tag)
        lines.append(f"| {upstream} (`{tag}`) | {head_name} | " + " | ".join(cells) + " |")
    return lines


def environment(metrics: list[dict]) -> list[str]:
    """torch / s3prl versions and devices from the exp dirs' config.yaml and feats_meta.json."""
    feats, training = set(), set()
    for m in metrics:
        exp = Path(m["exp_dir"])
        try:
            conf = read_yaml(exp / "config.yaml") or {}
        except OSError:
            conf = {}
        env = conf.get("env") or {}
        if env:
            training.add(f"torch {env.get('torch')}, Python {env.get('python')}, {env.get('device')}, "
                         f"{env.get('num_threads')} thread(s)")
        try:
            meta = json.loads((exp / "feats_meta.json").read_text())
        except (OSError, ValueError):
            continue
        v = meta.get("versions") or {}
        s3prl = v.get("espnet-s3prl") or v.get("s3prl") or meta.get("s3prl_version")
        feats.add(f"`{m['tag']}`: torch {v.get('torch', meta.get('torch_version'))}, S3PRL {s3prl}, "
                  f"extracted on {', '.join(meta.get('devices') or ['?'])}")
    lines = ["## Environment", ""]
    lines += [f"- features {x}" for x in sorted(feats)] or ["- features: (no feats_meta.json found)"]
    lines += [f"- training: {x}" for x in sorted(training)] or ["- training: (no config.yaml env found)"]
    return lines


# ---------------------------------------------------------------- paired bootstrap

def _system_predictions(system: Path, set_name: str) -> tuple[list[Path], list[str], list[str], np.ndarray, list[str]]:
    """Seed dirs of a system and (utts, refs, preds (S, N) class ids, classes); checks they agree."""
    system = Path(system)
    seeds = [system] if (system / f"decode_{set_name}").is_dir() else sorted(system.glob("seed*"))
    seeds = [s for s in seeds if (s / f"decode_{set_name}" / "predictions.txt").is_file()]
    if not seeds:
        raise FileNotFoundError(f"{system}: no decode_{set_name}/predictions.txt (in it or its seed*/): run stage 4")
    utts = refs = classes = None
    preds = []
    for s in seeds:
        path = s / f"decode_{set_name}" / "predictions.txt"
        u, r, p, _, c = read_predictions(path)
        if utts is None:
            utts, refs, classes = u, r, c
        elif (u, r, c) != (utts, refs, classes):
            raise ValueError(f"{path}: utterances, references or classes differ from {seeds[0]}")
        ids = {x: i for i, x in enumerate(c)}
        preds.append([ids[x] for x in p])
    return seeds, utts, refs, np.asarray(preds, dtype=np.int64), classes


def _resampled_metrics(ref: np.ndarray, preds: np.ndarray, num_classes: int, draws: np.ndarray) -> dict:
    """Mean over seeds of each metric, for each row of ``draws`` (B, N) utterance indices."""
    out = defaultdict(lambda: 0.0)
    b = np.arange(len(draws))[:, None]
    for p in preds:
        codes = (b * num_classes + ref[draws]) * num_classes + p[draws]
        cm = np.bincount(codes.ravel(), minlength=len(draws) * num_classes ** 2)
        for k, v in confusion_metrics(cm.reshape(len(draws), num_classes, num_classes)).items():
            out[k] = out[k] + v / len(preds)
    return dict(out)


def paired_bootstrap(system_a: Path, system_b: Path, set_name: str = "test",
                     metrics: Sequence[str] = ("ua", "macro_f1"), num_samples: int = 10000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Differences A - B with bootstrap CI and p-value per metric (see the module docstring)."""
    seeds_a, utts, refs, preds_a, classes = _system_predictions(system_a, set_name)
    seeds_b, utts_b, refs_b, preds_b, classes_b = _system_predictions(system_b, set_name)
    if (utts, refs, classes) != (utts_b, refs_b, classes_b):
        raise ValueError(f"{system_a} and {system_b} were not scored on the same {set_name} utterances with the "
                         "same references and classes: a paired test needs that")
    ids = {c: i for i, c in enumerate(classes)}
    ref = np.asarray([ids[r] for r in refs], dtype=np.int64)
    n, c = len(ref), len(classes)
    observed = {name: _resampled_metrics(ref, p, c, np.arange(n)[None]) for name, p in (("a", preds_a), ("b", preds_b))}
    rng = np.random.default_rng(seed)
    deltas = defaultdict(list)
    chunk = max(1, min(num_samples, 2_000_000 // max(n, 1)))
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        draws = rng.integers(0, n, size=(k, n))
        ma, mb = _resampled_metrics(ref, preds_a, c, draws), _resampled_metrics(ref, preds_b, c, draws)
        for m in metrics:
            deltas[m].append(ma[m] - mb[m])
        done += k
    result = {"set": set_name, "num_utts": n, "num_samples": num_samples, "seed": seed, "alpha": alpha,
              "a": {"system": str(system_a), "seeds": len(seeds_a)},
              "b": {"system": str(system_b), "seeds": len(seeds_b)},
              "metrics": {}}
    for m in metrics:
        d = np.concatenate(deltas[m])
        obs = float(observed["a"][m][0] - observed["b"][m][0])
        finite = d[np.isfinite(d)]
        lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        p = (1 + np.sum(np.abs(finite - obs) >= abs(obs))) / (len(finite) + 1)
        result["metrics"][m] = {"a": float(observed["a"][m][0]), "b": float(observed["b"][m][0]), "delta": obs,
                                "ci": [float(lo), float(hi)], "p": float(p), "significant": bool(p < alpha)}
    return result


def bootstrap_lines(res: dict) -> list[str]:
    conf = int(round(100 * (1 - res["alpha"])))
    lines = [f"| metric | A | B | A − B | {conf}% CI | p | significant (p < {res['alpha']}) |",
             "|---|---|---|---|---|---|---|"]
    for m, r in res["metrics"].items():
        lines.append(f"| {METRIC_NAMES[m]} | {100 * r['a']:.2f} | {100 * r['b']:.2f} | {100 * r['delta']:+.2f} | "
                     f"[{100 * r['ci'][0]:+.2f}, {100 * r['ci'][1]:+.2f}] | {r['p']:.4f} | "
                     f"{'yes' if r['significant'] else 'no'} |")
    return lines


# ---------------------------------------------------------------- RESULTS.md

def _task_titles(metrics: list[dict], tasks_conf: Path | None) -> tuple[dict, dict]:
    """Column titles and one-line descriptions of the tasks: from the tasks YAML, else from metrics.json."""
    titles, described = {}, {}
    try:
        conf = load_tasks(tasks_conf).tasks
    except FileNotFoundError:
        conf = {}
    for m in metrics:
        t = m["task"]
        task = conf.get(t)
        titles[t] = task.title if task is not None else m.get("title", t)
        classes = list(task.classes) if task is not None else m.get("classes", [])
        label_file = task.label_file if task is not None else "?"
        described[t] = f"{titles[t]} = `{t}`: labels `{label_file}`, {len(classes)} classes ({', '.join(classes)})"
    return titles, described


def write_results(exp_root: Path, out: Path, set_name: str = "test", num_samples: int = 10000, seed: int = 0,
                  results_conf: Path | None = None, tasks_conf: Path | None = None,
                  protocol_dir: Path | None = None, compare_exp: Path | None = None) -> str:
    found = find_metrics(exp_root, set_name)
    if not found:
        raise FileNotFoundError(f"no {exp_root}/<tag>/<head>/<task>/seed<N>/decode_{set_name}/metrics.json: "
                                "run stages 3 and 4 first")
    from etser.learn.score import stale_reasons

    dumps: dict = {}
    for m in found:  # scored before the labels, features or data they came from changed: marked, never passed off
        m["stale"] = stale_reasons(Path(m["exp_dir"]), set_name, dumps)
    # unimodal classification tables here; fusion and continuous tasks in their own sections
    metrics = [m for m in found if not fused(m) and kind_class(m["kind"]).metric_tables]
    tables = summarize(metrics, load_tables(results_conf))
    titles, described = _task_titles(metrics, tasks_conf)
    seeds = sorted({m["seed"] for m in found})
    varying = varying_counts(found)
    lines = ["# Results", "",
             f"Generated by `python -m etser.report.results` from {len(metrics)} `decode_{set_name}/metrics.json` under "
             f"`{exp_root}/` on {time.strftime('%Y-%m-%d %H:%M')}; do not edit by hand.", "",
             f"Set: **{set_name}**. Each cell: mean ± sample standard deviation over seeds "
             f"({', '.join(map(str, seeds))}"
             "; `(n=k)` where a cell has fewer), in percent. The best epoch of each run was chosen on val "
             "(see each exp dir's config.yaml `select_metric`); nothing is chosen on test. Mean: mean of the "
             "table's listed columns. Tables: " + ", ".join(f"{t['title']} (features of modality {t['modality']})"
                                                            for t in tables) + ".", "",
             "Columns:", ""] + [f"- {described[t]}" for t in dict.fromkeys(c for t in tables for c in t["columns"])] + [""]
    if varying:
        lines += [COUNT_NOTE, ""]
    lines += stale_section(found)
    official = any(m["head"] in OFFICIAL_HEADS for m in metrics)
    if official:
        lines += ["Rows of head `paper` follow the official protocol (best epoch on val weighted-F1): weighted-F1 "
                  "and WA (accuracy) are the metrics comparable with the seeds' numbers (the official code "
                  "computes only those), so weighted-F1 comes first.", ""]
    from etser.report.protocols import protocol_lines

    for metric in (OFFICIAL_ORDER if official else TABLE_ORDER) if metrics else ():
        lines += [f"## {METRIC_NAMES[metric]}", ""]
        for table in tables:
            over, under = protocol_lines([m for row in table["cells"].values() for runs in row.values() for m in runs],
                                         protocol_dir)
            lines += [f"### {table['title']}", ""] + over + metric_table(table, metric, titles, varying) + [""] + under
        lines += [DEFINITIONS[metric], ""]
    from etser.learn.search import search_notes

    lines += fusion_sections(found, set_name, tasks_conf, protocol_dir)
    lines += own_metric_tables(found, tasks_conf, protocol_dir)
    lines += search_notes(found)
    if compare_exp is not None:   # the runs of the other protocol, in another exp tree
        from etser.report.protocols import compare_protocol_trees

        lines += compare_protocol_trees(exp_root, Path(compare_exp), set_name, tasks_conf)
    lines += ["## Significance (paired bootstrap)", ""]
    lines += _significance(tables, titles, set_name, num_samples, seed)
    lines += [""] + environment(metrics) + [""]
    text = "\n".join(lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return text


def own_metric_tables(found: list[dict], tasks_conf: Path | None = None, protocol_dir: Path | None = None
                      ) -> list[str]:
    """A table per task of a kind that has metrics of its own (e.g. a continuous arousal task): a row per
    features x head, the kind's metrics as columns (mean ± sample std over seeds).  Tasks that the fusion
    section's MERBench tables show already (sentiment) and fusion runs are left to those tables."""
    _, sentiment = multimodal_tasks(tasks_conf)
    runs = [m for m in found if not kind_class(m["kind"]).metric_tables and not fused(m) and m["task"] != sentiment]
    if not runs:
        return []
    try:
        titles = {n: t.title for n, t in load_tasks(tasks_conf).tasks.items()}
    except (FileNotFoundError, ValueError):
        titles = {}
    by_task: dict = defaultdict(lambda: defaultdict(list))
    for m in runs:
        by_task[m["task"]][(m["tag"], m["head"])].append(m)
    lines = ["## Tasks with metrics of their own", "",
             "Shares (Acc-2, WF1) in percent; MAE, Pearson r and CCC as they are. Each cell: mean ± sample "
             "standard deviation over seeds; the best epoch was chosen on val.", ""]
    for task, rows in sorted(by_task.items()):
        first = next(iter(rows.values()))[0]
        kind = kind_class(first["kind"])
        names = kind.metric_names
        from etser.report.protocols import protocol_lines

        over, under = protocol_lines([m for ms in rows.values() for m in ms], protocol_dir)
        lines += [f"### {titles.get(task, first.get('title', task))} (`{task}`, kind {kind.kind})", "", *over,
                  "| Features | Head | " + " | ".join(names.values()) + " |",
                  "|" + "---|" * (len(names) + 2)]
        for (tag, head), ms in sorted(rows.items()):
            cells = []
            for k in names:
                v = (100 if k in kind.percent_metrics else 1) * np.asarray([m[k] for m in ms], dtype=float)
                digits = 2 if k in kind.percent_metrics else 3
                cells.append(f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""))
            lines.append(f"| {tag} | {head} | " + " | ".join(cells) + " |")
        lines += ["", *under]
    return lines


def stale_section(found: list[dict]) -> list[str]:
    """The rows scored on inputs that changed since, each with why (the first changes), and what to rerun."""
    stale = [m for m in found if m.get("stale")]
    if not stale:
        return []
    lines = ["## Stale rows", "",
             f"{len(stale)} of {len(found)} scorings were made from labels, features or data that changed since: "
             "their cells say `(stale)`. Rerun stages 2-4 with the options that made them (changed inputs are "
             "redone, the rest kept), then stage 5.", ""]
    for m in stale:
        more = f"; … ({len(m['stale']) - 3} more)" if len(m["stale"]) > 3 else ""
        lines.append(f"- `{m['exp_dir']}`: " + "; ".join(m["stale"][:3]) + more)
    return lines + [""]


def _significance(tables, titles, set_name, num_samples, seed) -> list[str]:
    lines = [f"Per table and column, the two systems (upstream × head) with the best mean UA, compared on the same "
             f"{set_name} utterances: {num_samples} resamples (seed {seed}), the statistic being the mean over each "
             f"system's seeds; the smallest p this can give is 1/{num_samples + 1:.0f} ≈ {1 / (num_samples + 1):.4f}. "
             "`python -m etser.report.results bootstrap A B` compares any two.", ""]
    compared = 0
    for table in tables:
        cells = table["cells"]
        for t in table["columns"]:
            ranked = sorted(((np.mean([r["ua"] for r in cells[row][t]]), row) for row in table["rows"]
                             if t in cells[row]), reverse=True)
            if len(ranked) < 2:
                continue
            (_, a), (_, b) = ranked[:2]
            dirs = [Path(cells[x][t][0]["exp_dir"]).parent for x in (a, b)]
            name = f"{table['title']}, {titles.get(t, t)}"
            try:
                res = paired_bootstrap(dirs[0], dirs[1], set_name, num_samples=num_samples, seed=seed)
            except (ValueError, FileNotFoundError) as e:
                lines += [f"{name}: not compared ({e})", ""]
                continue
            lines += [f"**{name}**: A = {a[1]} on `{a[0]}` ({res['a']['seeds']} seed(s)), "
                      f"B = {b[1]} on `{b[0]}` ({res['b']['seeds']} seed(s)), {res['num_utts']} utterances", ""]
            lines += bootstrap_lines(res) + [""]
            compared += 1
    if not compared:
        lines.append("Only one system per column so far: nothing to compare.")
    return lines


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bootstrap":
        ap = argparse.ArgumentParser(prog="python -m etser.report.results bootstrap",
                                     description="paired bootstrap test between two systems on the same set")
        ap.add_argument("system_a", type=Path, help="exp dir of one seed, or of a task (all its seed*/)")
        ap.add_argument("system_b", type=Path)
        ap.add_argument("--set", default="test")
        ap.add_argument("--metrics", default="ua macro_f1", help=f"space-separated, of {' '.join(METRIC_NAMES)}")
        ap.add_argument("--num_samples", type=int, default=10000)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--alpha", type=float, default=0.05)
        a = ap.parse_args(argv[1:])
        bad = [m for m in a.metrics.split() if m not in METRIC_NAMES]
        if bad:
            ap.error(f"unknown metric(s) {' '.join(bad)}")
        try:
            res = paired_bootstrap(a.system_a, a.system_b, a.set, a.metrics.split(), a.num_samples, a.seed, a.alpha)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"paired bootstrap on {res['set']}: {res['num_utts']} utterances, {res['num_samples']} resamples, "
              f"seed {res['seed']}\nA = {res['a']['system']} ({res['a']['seeds']} seed(s))\n"
              f"B = {res['b']['system']} ({res['b']['seeds']} seed(s))\n")
        print("\n".join(bootstrap_lines(res)))
        return 0
    ap = argparse.ArgumentParser(prog="python -m etser.report.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", type=Path, default=Path("exp"), help="experiment root (default: exp)")
    ap.add_argument("--out", type=Path, default=None, help="default: <exp>/RESULTS.md")
    ap.add_argument("--set", default="test")
    ap.add_argument("--num_samples", type=int, default=10000, help="bootstrap resamples for the significance section")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results_conf", type=Path, default=None, help="tables YAML (default: conf/results.yaml)")
    ap.add_argument("--tasks_conf", type=Path, default=None, help="tasks YAML (default: conf/tasks.yaml)")
    ap.add_argument("--protocol_dir", type=Path, default=None, help="the protocols (default: conf/protocol)")
    ap.add_argument("--compare_exp", type=Path, default=None,
                    help="an exp tree of the other protocol's runs: adds 'What each fix is worth'")
    a = ap.parse_args(argv)
    out = a.out or a.exp / "RESULTS.md"
    t0 = time.monotonic()
    try:
        text = write_results(a.exp, out, a.set, a.num_samples, a.seed, a.results_conf, a.tasks_conf,
                             a.protocol_dir, a.compare_exp)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ua = text.split("## UA", 1)[1].split(f"\n{DEFINITIONS['ua']}", 1)[0].strip() if "## UA" in text else ""
    print(f"{out}: {text.count(chr(10))} lines in {time.monotonic() - t0:.1f} s"
          + (f"; UA on {a.set}:\n{ua}" if ua else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

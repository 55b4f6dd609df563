"""Which training protocol (conf/protocol/<name>.yaml) produced the runs of a RESULTS.md table, what a user
changed by hand against it, and what each of our fixes is worth (official against corrected).

    python -m etser.report.protocols compare --official exp/official --corrected exp [--set test] \\
        [--out exp/PROTOCOLS.md]

Every training records its protocol in ``config.yaml`` (``protocol``; runs made before protocols existed have
none and were trained as ``corrected``).  Over each table RESULTS.md says which protocol(s) its rows come from
and the features' setup (the upstream configs' ``official`` flag where they have one); under it, every value
a protocol sets that a row's runs do not have (a training option, a fusion model option, the number of
draws of the search, the heads, the seeds): the deviations a user chose by hand.

``compare``: for every (features, head or algorithm, task) trained under both protocols, the weighted-F1 (the
official metric; sentiment: of the sign) of each, mean ± sample std over seeds, and the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from etser.learn.config import DEFAULT_PROTOCOL, load_protocol
from etser.report.found import find_metrics, fused
from etser.yamlfile import read_yaml

DEFAULT_PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "conf" / "protocol"


def run_config(m: dict) -> dict:
    """The ``config.yaml`` of a scored run (cached in ``m``); {} when it cannot be read."""
    if "_config" not in m:
        try:
            m["_config"] = read_yaml(Path(m["exp_dir"]) / "config.yaml") or {}
        except (OSError, ValueError):
            m["_config"] = {}
    return m["_config"]


def run_protocol(m: dict) -> str:
    return str(run_config(m).get("protocol") or DEFAULT_PROTOCOL)


def _protocols(names: Iterable[str], protocol_dir: Path) -> dict:
    out = {}
    for name in sorted(set(names)):
        try:
            out[name] = load_protocol(Path(protocol_dir) / f"{name}.yaml")
        except (ValueError, FileNotFoundError):
            out[name] = None   # a protocol since renamed or removed: named, not compared
    return out


def _lookup(conf: Mapping, dotted: str):
    node = conf
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def deviations(runs: Sequence[dict], protocol: dict) -> list[str]:
    """What the runs of one row (features x head/algorithm, all tasks and seeds) have that ``protocol`` does
    not say: '<option> <theirs> (protocol: <value>)'."""
    out = {}
    fusion = fused(runs[0])
    wanted = dict(protocol["train"]) | (dict(protocol["fusion"]) if fusion else {})
    for key, value in wanted.items():
        got = sorted({json.dumps(_lookup(run_config(m), key)) for m in runs})   # YAML's spelling: null, false
        if got != [json.dumps(value)]:
            out[key] = f"{key} {', '.join(got)} (protocol: {json.dumps(value)})"
    run = protocol["run"]
    if "search_trials" in run:   # the draws of each row's search (0: not searched)
        from etser.learn.search import read_selection

        sels = [read_selection(row) for row in sorted({Path(m["exp_dir"]).parent for m in runs})]
        got = sorted({int(sel["draws"]) if sel else 0 for sel in sels})
        if got != [int(run["search_trials"] or 0)]:
            out["search_trials"] = (f"search draws {', '.join(map(str, got))} "
                                    f"(protocol: {run['search_trials']})")
    if not fusion and run.get("heads") and runs[0]["head"] not in str(run["heads"]).split():
        out["heads"] = f"head {runs[0]['head']} (protocol: {run['heads']})"
    if run.get("seeds"):
        want = sorted(int(s) for s in str(run["seeds"]).split())
        by_task = defaultdict(set)
        for m in runs:
            by_task[m["task"]].add(int(m["seed"]))
        got = sorted({tuple(sorted(s)) for s in by_task.values()})
        if got != [tuple(want)]:
            out["seeds"] = (f"seeds {'; '.join(' '.join(map(str, g)) for g in got)} "
                            f"(protocol: {' '.join(map(str, want))})")
    return list(out.values())


def _features_setup(runs: Sequence[dict]) -> list[str]:
    """Each stream's upstream and the ``official`` flag of its config (the copy in the exp dir)."""
    seen = {}
    for m in runs:
        exp = Path(m["exp_dir"])
        streams = m.get("stream_upstreams") or {None: m.get("upstream", m["tag"])}
        for stream, upstream in streams.items():
            path = exp / ("upstream.yaml" if stream is None else f"upstream_{stream}.yaml")
            try:
                conf = read_yaml(path) or {}
            except (OSError, ValueError):
                conf = {}
            seen.setdefault(str(upstream), conf.get("official") if isinstance(conf, dict) else None)
    return [f"`{n}` ({'official: ' + str(f).lower() if f is not None else 'its config has no official flag'})"
            for n, f in sorted(seen.items())]


def row_key(m: dict) -> tuple[str, str]:
    return (m["tag"], m.get("algo") or m["head"])


def protocol_lines(runs: Sequence[dict], protocol_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(lines over a table, lines under it) for the runs it shows."""
    if not runs:
        return [], []
    protocol_dir = Path(protocol_dir) if protocol_dir is not None else DEFAULT_PROTOCOL_DIR
    by_protocol: dict = defaultdict(lambda: defaultdict(list))
    for m in runs:
        by_protocol[run_protocol(m)][row_key(m)].append(m)
    protocols = _protocols(by_protocol, protocol_dir)

    def named(name: str) -> str:
        p = protocols[name]
        return (f"**{name}** (`conf/protocol/{name}.yaml` version {p['version']}: {p['description']})" if p
                else f"**{name}** (no conf/protocol/{name}.yaml any more)")
    if len(by_protocol) == 1:
        over = f"Protocol: {named(next(iter(by_protocol)))}."
    else:
        over = "Protocols: " + "; ".join(f"{named(n)} for " + ", ".join(f"{t} {h}" for t, h in sorted(rows))
                                         for n, rows in sorted(by_protocol.items())) + "."
    setup = _features_setup(runs)
    above = [over + (" Features: " + ", ".join(setup) + "." if setup else ""), ""]
    under = []
    for name, rows in sorted(by_protocol.items()):
        if protocols[name] is None:
            continue
        for (tag, head), rr in sorted(rows.items()):
            devs = deviations(rr, protocols[name])
            if devs:
                under.append(f"- {tag} {head}: " + "; ".join(devs))
    if under:
        under = ["Deviations from the protocol chosen by hand:", ""] + under + [""]
    return above, under


def sentiment_discrete(m: dict, protocol_dir: Path | None = None) -> str | None:
    """The algorithm whose Multi runs fill a sentiment row's Discrete columns under the run's protocol (None:
    the row's own)."""
    p = _protocols([run_protocol(m)], Path(protocol_dir) if protocol_dir else DEFAULT_PROTOCOL_DIR)[run_protocol(m)]
    return (p or {}).get("report", {}).get("sentiment_discrete")


# ---------------------------------------------------------------- what each fix is worth

def _main(m: dict) -> float:
    from etser.tasks import kind_class

    return float(m[kind_class(m.get("kind", "classes")).table_metric])


def _cell(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def compare_lines(official: Sequence[dict], corrected: Sequence[dict], task_titles: Mapping | None = None
                  ) -> list[str]:
    """The table of every (features, head or algorithm, task) scored under both protocols."""
    task_titles = task_titles or {}

    def group(ms):
        out = defaultdict(list)
        for m in ms:
            key = (" + ".join((m.get("stream_upstreams") or {}).values()) or m.get("upstream", m["tag"]),
                   m.get("algo") or m["head"], m["task"])
            out[key].append(m)
        return out
    a, b = group(official), group(corrected)
    pairs = {k: k for k in set(a) & set(b)}
    # a unimodal row's head differs between the protocols (official: paper, corrected: superb): the one
    # unmatched head of each side on the same features and task are the two figures of that row
    left = defaultdict(list)
    for side, keys in (("a", set(a) - set(b)), ("b", set(b) - set(a))):
        for k in keys:
            if not fused((a if side == "a" else b)[k][0]):
                left[(k[0], k[2])].append((side, k))
    for (feats, task), ks in left.items():
        if sorted(side for side, _ in ks) == ["a", "b"]:
            ka, kb = (k for _, k in sorted(ks))
            pairs[(feats, f"{ka[1]} / {kb[1]}", task)] = (ka, kb)
    a.update({k: a[v[0]] for k, v in pairs.items() if isinstance(v[0], tuple)})
    b.update({k: b[v[1]] for k, v in pairs.items() if isinstance(v[0], tuple)})
    both = sorted(pairs, key=lambda k: (k[0], k[2], k[1]))
    lines = ["## What each fix is worth (official against corrected protocol)", "",
             "Each model trained under both protocols on the same features and data: weighted-F1 on test (the "
             "official metric; sentiment: of the sign on the non-zero labels), mean ± sample std over seeds, in "
             "percent. official: the official code's choices (100 epochs without early stop, unshuffled "
             "batches, raw features, every fusion model's official details and bugs); corrected: ours. "
             "Δ = corrected − official; |Δ| below the larger seed std is within the seed spread.", ""]
    if not both:
        return lines + ["No model was scored under both protocols.", ""]
    lines += ["Model `paper / superb`: a unimodal row, with each protocol's head.", "",
              "| Features | Model | Task | official | corrected | Δ | seeds |", "|---|---|---|---|---|---|---|"]
    for key in both:
        va, vb = [_main(m) for m in a[key]], [_main(m) for m in b[key]]
        delta = 100 * (np.mean(vb) - np.mean(va))
        spread = max(100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in (va, vb))
        mark = "" if abs(delta) > spread else " (within spread)"
        lines.append(f"| {key[0]} | {key[1]} | {task_titles.get(key[2], key[2])} | {_cell(va)} | {_cell(vb)} | "
                     f"{delta:+.2f}{mark} | {len(va)} / {len(vb)} |")
    return lines + [""]


def compare_protocol_trees(exp_a: Path, exp_b: Path, set_name: str = "test", tasks_conf: Path | None = None
                           ) -> list[str]:
    """The comparison of two exp trees, whichever holds which protocol (RESULTS.md's section)."""
    names = {run_protocol(m) for m in find_metrics(exp_a, set_name)}
    return (compare(exp_a, exp_b, set_name, tasks_conf) if "official" in names
            else compare(exp_b, exp_a, set_name, tasks_conf))


def compare(official_exp: Path, corrected_exp: Path, set_name: str = "test", tasks_conf: Path | None = None
            ) -> list[str]:
    titles = {}
    try:
        from etser.tasks import load_tasks

        titles = {n: t.title for n, t in load_tasks(tasks_conf).tasks.items()}
    except (FileNotFoundError, ValueError):
        pass
    official = [m for m in find_metrics(official_exp, set_name) if run_protocol(m) == "official"]
    corrected = [m for m in find_metrics(corrected_exp, set_name) if run_protocol(m) == "corrected"]
    if not official or not corrected:
        raise FileNotFoundError(f"no runs of protocol official under {official_exp} ({len(official)}) or of "
                                f"corrected under {corrected_exp} ({len(corrected)}): run both protocols first")
    return compare_lines(official, corrected, titles)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.report.protocols", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compare", help="what each fix is worth: the runs of both protocols side by side")
    p.add_argument("--official", type=Path, required=True, help="exp tree of the official protocol's runs")
    p.add_argument("--corrected", type=Path, required=True, help="exp tree of the corrected protocol's runs")
    p.add_argument("--set", default="test")
    p.add_argument("--tasks_conf", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="default: print")
    a = ap.parse_args(argv)
    try:
        lines = compare(a.official, a.corrected, a.set, a.tasks_conf)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"{a.out}: {len(lines)} lines", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

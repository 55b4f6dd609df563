"""MERBench's protocol as stage-3 jobs: N random draws, the best on val, then K runs of it.

A searched row (a head with a search space, ``Head.search_space``: the paper head's tune lists, a fusion
algorithm's) is planned in two phases by etser.launch.plan, each an ordinary stage-3 job file:

1. the draws: ``<row>/search/draw<k>/`` for k = 1..N, each ONE training line (``--conf search_draw=k --conf
   search_seed=S``, seed k: MERBench trains each draw once with a fresh seed), resumable and spread over the
   jobs like any training;
2. once every draw is done, :func:`select` picks the draw with the best validation value of the task's
   selection metric (the one each draw selected its epoch on; test is never read, ties go to the earlier
   draw), writes ``<row>/search/selection.json`` (every draw with its drawn values and val metrics) and the
   K runs ``<row>/seed1..seedK/`` of the chosen draw are planned; stage 4 scores those, and the results
   table averages them as any seeds (mean ± std).

``<row>`` is ``exp/<tag>/<head>/<task>`` (fusion: ``exp/fusion_<tags>/<algo>/<task>``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from etser.learn.tune import select_best
from etser.yamlfile import read_yaml

SELECTION = "selection.json"


def draw_dir(row_dir: str | Path, k: int) -> str:
    return f"{row_dir}/search/draw{int(k)}"


def run_dir(row_dir: str | Path, seed: int) -> str:
    return f"{row_dir}/seed{int(seed)}"


def select(row_dir: str | Path, trials: int, search_seed: int, runs: int, lower_is_better: tuple[str, ...] = ()
           ) -> dict[str, Any]:
    """Select among draws 1..``trials`` of ``row_dir`` on validation and write ``search/selection.json``.

    Every draw must be finished (``done``) with the config of that draw (``search_draw`` k, ``search_seed``);
    otherwise ValueError names the first draw that is not, and what to run."""
    row_dir = Path(row_dir)
    records, pending = [], []
    for k in range(1, int(trials) + 1):
        d = Path(draw_dir(row_dir, k))
        if not (d / "done").is_file():
            pending.append(str(d))
            continue
        conf = read_yaml(d / "config.yaml") or {}
        if int(conf.get("search_draw") or 0) != k or int(conf.get("search_seed") or 0) != int(search_seed):
            raise ValueError(f"{d}: trained as draw {conf.get('search_draw')} of search seed {conf.get('search_seed')}"
                             f", not draw {k} of seed {search_seed}: rerun stage 3 (its draws are planned first)")
        done = json.loads((d / "done").read_text())
        records.append({"draw": k, "exp_dir": str(d), "values": conf.get("search_values") or {},
                        "val": done["val_metrics"], "metric": done["select_metric"]})
    if pending:
        raise ValueError(f"{len(pending)} of {trials} search draw(s) of {row_dir} not finished (no {pending[0]}/done"
                         f"{' ...' if len(pending) > 1 else ''}): run stage 3, whose first job file trains them")
    metrics = {r["metric"] for r in records}
    if len(metrics) != 1:
        raise ValueError(f"the draws of {row_dir} selected their epochs on different metrics {sorted(metrics)}")
    (metric,) = metrics
    mode = "min" if metric in lower_is_better else "max"
    best = select_best(records, metric, mode)
    doc = {"metric": metric, "mode": mode, "search_seed": int(search_seed), "draws": int(trials), "runs": int(runs),
           "best_draw": records[best]["draw"], "best_values": records[best]["values"],
           "records": [{k: v for k, v in r.items() if k != "metric"} for r in records]}
    out = row_dir / "search" / SELECTION
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    return doc


def read_selection(row_dir: str | Path) -> dict[str, Any] | None:
    """The selection of a searched row (None: the row was not searched)."""
    path = Path(row_dir) / "search" / SELECTION
    return json.loads(path.read_text()) if path.is_file() else None


def search_notes(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """RESULTS.md lines under the tables marking the rows a search made (the exp dirs of ``found`` whose row
    has a selection): draws, runs, the selection metric and the chosen draw's values."""
    rows = {}
    for m in found:
        row = Path(m["exp_dir"]).parent
        if row not in rows:
            rows[row] = read_selection(row)
    searched = {row: sel for row, sel in rows.items() if sel is not None}
    if not searched:
        return []
    lines = ["Searched rows (MERBench's protocol: random draws of the tune lists, the best on val, then the mean ± "
             "std of runs of it; test never read):", ""]
    for row, sel in searched.items():
        values = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sel["best_values"].items())
        lines.append(f"- `{row}`: {sel['draws']} draws, {sel['runs']} runs; draw {sel['best_draw']} chosen on val "
                     f"{sel['metric']} ({values})")
    return lines + [""]

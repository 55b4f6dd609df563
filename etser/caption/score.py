"""Decode and score a trained captioner (or a baseline) on some sets; build the captioning table.

    python -m etser.caption.score --exp_dir exp/caption/<tag>/transformer/style/seed1 \\
        --sets "val test" --data_dir data --feats_dir dump/<tag> [--metrics_config conf/caption/metrics.yaml]
    python -m etser.caption.score --baseline nearest --kind style --exp_dir exp/caption/<tag>/baseline_nearest/style \\
        --sets "val test" --data_dir data --feats_dir dump/<tag>

Writes ``<exp_dir>/decode_<set>/metrics.json`` and ``hyp_ref.txt`` (utt<TAB>hypothesis<TAB>reference...).
``table_rows`` / ``format_table`` turn a list of metrics.json into the caption kind x decoder table (mean and
std over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from etser.caption.data import load_frames, pooled, read_captions, task_of
from etser.caption.metrics import TABLE_COLUMNS, load_metrics_config
from etser.caption.references import read_references
from etser.datadir import read_table
from etser.tasks.caption import CaptionTask, caption_tasks

LOG = logging.getLogger("etser.caption.score")


def _wavs(data_set_dir: Path, utts: Sequence[str]) -> list[str] | None:
    path = Path(data_set_dir) / "wav.scp"
    if not path.is_file():
        return None
    table = read_table(path)
    missing = [u for u in utts if u not in table]
    if missing:
        raise KeyError(f"{path}: {len(missing)} captioned utterance(s) have no audio (first: {missing[0]})")
    return [table[u] for u in utts]


def write_decode(out_dir: Path, utts, hyps, refs, result: dict, info: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "hyp_ref.txt", "w", encoding="utf-8") as f:
        f.write("# utt\thypothesis\treference(s)\n")
        for u, h, rs in zip(utts, hyps, refs):
            f.write("\t".join([u, h.replace("\t", " "), *rs]) + "\n")
    metrics = {**info, "num_utts": len(utts), "scores": result["scores"], "notes": result["notes"],
               "empty_hypotheses": sum(not h.strip() for h in hyps)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return metrics


def trained_task(info: dict, tasks_conf: Path | None = None) -> CaptionTask:
    """The caption task a captioner was trained on: the spec its ``best.pt`` records, else (older exp dirs)
    the task of its caption kind in ``tasks_conf``."""
    from etser.tasks import task_from_spec

    if info.get("task_spec"):
        return task_from_spec(info["task_spec"], "best.pt")
    return task_of(info["kind"], tasks_conf)


def score_exp(exp_dir: Path, sets: Sequence[str], data_dir: Path, feats_dir: Path, mconf: dict,
              device: str = "cpu", num_beams: int | None = None, tasks_conf: Path | None = None) -> list[dict]:
    import torch
    from etser.caption.decode import generate, load_trained

    model, info = load_trained(exp_dir, device)
    task = trained_task(info, tasks_conf)
    conf = info["conf"]
    dc = {**conf["decode_conf"], **({"num_beams": num_beams} if num_beams else {})}
    out = []
    for s in sets:
        t0 = time.monotonic()
        cs = read_captions(Path(data_dir) / s, task)
        load_frames(cs, Path(feats_dir) / s, info["layers"], float(conf.get("preload_frames_gb", 2.0)))
        torch.manual_seed(0)
        hyps = generate(model, cs, device, int(dc["num_beams"]), int(dc["max_len"]), float(dc["length_penalty"]))
        refs = read_references(Path(data_dir) / s, task, cs)
        res = task.metrics(hyps, refs, mconf, _wavs(Path(data_dir) / s, cs.utts), device)
        meta = {"kind": info["kind"], "decoder": conf["decoder"], "set": s, "seed": info["seed"],
                "exp_dir": str(exp_dir), "tag": Path(feats_dir).name, "best_epoch": info["epoch"],
                "averaged_epochs": info.get("averaged_epochs"), "decode": dc,
                "counts": cs.counts}
        m = write_decode(Path(exp_dir) / f"decode_{s}", cs.utts, hyps, refs, res, meta)
        sec = time.monotonic() - t0
        LOG.info("%s %s: %s; %d utts in %.1f s (%.1f utts/s, decoding and scoring)", exp_dir, s, _fmt(m["scores"]),
                 len(cs), sec, len(cs) / max(sec, 1e-9))
        out.append(m)
    return out


def score_baseline(name: str, kind, exp_dir: Path, sets: Sequence[str], data_dir: Path, feats_dir: Path,
                   mconf: dict, layers="all", train_set: str = "train", tasks_conf: Path | None = None) -> list[dict]:
    """Score one of the caption task's baselines (``kind``: the task, or its caption kind in ``tasks_conf``);
    the features (time-mean frames) are read only for a baseline that uses them (``nearest``)."""
    task = task_of(kind, tasks_conf)
    if name not in task.baselines:
        raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(task.baselines)}")
    tr = read_captions(Path(data_dir) / train_set, task)
    feats = name == "nearest"
    if feats:
        layers, _ = load_frames(tr, Path(feats_dir) / train_set, layers)
    out = []
    for s in sets:
        cs = read_captions(Path(data_dir) / s, task)
        if feats:
            load_frames(cs, Path(feats_dir) / s, layers)
        hyps = task.baseline(name, tr.captions, len(cs), pooled(tr) if feats else None, pooled(cs) if feats else None)
        refs = read_references(Path(data_dir) / s, task, cs)
        res = task.metrics(hyps, refs, mconf, _wavs(Path(data_dir) / s, cs.utts))
        meta = {"kind": task.caption_kind, "decoder": f"baseline_{name}", "set": s, "seed": None,
                "exp_dir": str(exp_dir),
                "tag": Path(feats_dir).name,
                "counts": cs.counts}
        m = write_decode(Path(exp_dir) / f"decode_{s}", cs.utts, hyps, refs, res, meta)
        LOG.info("%s %s: %s", exp_dir, s, _fmt(m["scores"]))
        out.append(m)
    return out


def _fmt(scores: dict) -> str:
    return " ".join(f"{TABLE_COLUMNS[k]} {v:.3f}" for k, v in scores.items() if k in TABLE_COLUMNS and v is not None)


# ---------------------------------------------------------------- table

def table_rows(metrics_files: Sequence[Path], set_name: str = "test", tasks_conf: Path | None = None) -> list[dict]:
    """One row per (kind, decoder): mean and std over seeds of every table column (None: blank cell); kinds in
    the order of the caption tasks of ``tasks_conf``, others after them."""
    groups: dict[tuple, list[dict]] = {}
    for p in metrics_files:
        m = json.loads(Path(p).read_text(encoding="utf-8"))
        if m["set"] == set_name:
            groups.setdefault((m["kind"], m["decoder"]), []).append(m)
    kind_order = {k: i for i, k in enumerate(caption_tasks(tasks_conf))}
    rows = []
    for (kind, dec), ms in sorted(groups.items(), key=lambda kv: (kind_order.get(kv[0][0], 99), kv[0][1])):
        row = {"kind": kind, "decoder": dec, "seeds": len(ms), "num_utts": ms[0]["num_utts"],
               "segmentation": ms[0]["notes"].get("segmentation")}
        for col in TABLE_COLUMNS:
            vals = [m["scores"].get(col) for m in ms]
            vals = [v for v in vals if v is not None]
            row[col] = (float(np.mean(vals)), float(np.std(vals))) if len(vals) == len(ms) and vals else None
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown: kind | decoder | seeds | the seven metric columns | CIDEr-D; blank where not computable."""
    cols = list(TABLE_COLUMNS)
    head = "| caption | decoder | seeds | " + " | ".join(TABLE_COLUMNS[c] for c in cols) + " |"
    lines = [head, "|" + "---|" * (3 + len(cols))]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append("" if v is None else f"{v[0]:.3f}" + (f" ± {v[1]:.3f}" if r["seeds"] > 1 else ""))
        lines.append(f"| {r['kind']} | {r['decoder']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.caption.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp_dir", type=Path, required=True)
    ap.add_argument("--sets", default="val test", help="space-separated set names")
    ap.add_argument("--data_dir", type=Path, default=Path("data"))
    ap.add_argument("--feats_dir", type=Path, required=True)
    ap.add_argument("--metrics_config", type=Path, default=None, help="conf/caption/metrics.yaml")
    ap.add_argument("--baseline", choices=CaptionTask.baselines, help="score a baseline instead of a trained model")
    ap.add_argument("--kind", help="with --baseline: the caption kind (the caption_kind of a caption task)")
    ap.add_argument("--tasks_conf", type=Path, default=None, help="tasks YAML (default: conf/tasks.yaml)")
    ap.add_argument("--num_beams", type=int, default=None, help="override decode_conf.num_beams")
    ap.add_argument("--ngpu", type=int, default=0)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run_line(args, argv, {})
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        LOG.error("%s: %s", args.exp_dir, e.args[0] if isinstance(e, KeyError) else e)
        return 1
    return 0


def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> None:
    """One scoring of a job file's line (the job-module protocol: raises on failure).  The METEOR Java started
    by the first line of a job serves the others."""
    from etser.caption.decode import quiet_transformers
    from etser.runtime import pick_device

    quiet_transformers()
    sets = args.sets.split()
    mconf = load_metrics_config(args.metrics_config)
    if args.baseline:
        if not args.kind:
            raise ValueError("--baseline needs --kind")
        score_baseline(args.baseline, args.kind, args.exp_dir, sets, args.data_dir, args.feats_dir, mconf,
                       tasks_conf=args.tasks_conf)
    else:
        score_exp(args.exp_dir, sets, args.data_dir, args.feats_dir, mconf, pick_device(args.ngpu),
                  args.num_beams, args.tasks_conf)


if __name__ == "__main__":
    sys.exit(main())

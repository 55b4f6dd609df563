#!/usr/bin/env python3
"""Cost of one random-search draw of the unimodal paper head against one superb training, on the same pooled cache.

MERBench's protocol is 50 draws, then 6 runs of the best (56 trainings per upstream and task, spread over the
stage-3 jobs by the planner); this prints what ONE of them costs next to one superb training today: both train
through the same trainer (etser.learn.train.train) from the stage-2 pooled cache held in memory, with the
committed configs (conf/train/superb.yaml: patience 20; conf/train/paper.yaml: 100 epochs, no early stop, as
the official code) and the paper head's draw 1 of seed 0 (``search_draw=1``).  Also superb without early
stopping (the same 100 epochs as a draw), the paper head's defaults and the fixed-MLP head (mlp).

Input: a stage-2 dump and its data dir (``--feats_dir dump/<tag> --data_dir data``), or without them a synthetic
corpus shaped like a HuBERT-Base dump (13 layers x 768 dims; ``--num_train`` train utterances, a quarter as
many val).  Prints per head: epochs, seconds (the fastest of ``--repeats``: a shared machine's neighbours slow
single runs by up to a third), per epoch; then the ratios paper/superb (whole training and per epoch), one torch
thread each.

  bench/search_cost.py [--feats_dir dump/hubert_base_X --data_dir data] [--task speech_four] [--num_train 1000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "local"))   # the synthetic corpus helper reads the corpus labels


def synthetic(root: Path, num_train: int, num_layers: int, dim: int) -> tuple[Path, Path]:
    from tests.helpers_feats import make_corpus

    n_val = max(8, num_train // 4)
    return make_corpus(root, sizes={"train": num_train, "val": n_val}, num_layers=num_layers, dim=dim,
                       frame_layers=None, separation=0.3, tag="bench_hubert_base")


def one_training(head: str, extra: list[str], data_dir: Path, feats_dir: Path, task: str, exp: Path,
                 cache: dict) -> dict:
    from etser.learn.train import load_config, train

    conf = load_config(ROOT / "conf" / "train" / f"{head}.yaml", extra)
    start = time.perf_counter()
    summary = train(conf, task, data_dir, feats_dir, exp, seed=1, num_threads=1, cache=cache)
    seconds = time.perf_counter() - start
    return {"epochs": summary["epochs"], "seconds": seconds, "per_epoch": seconds / max(summary["epochs"], 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feats_dir", type=Path, default=None, help="a stage-2 dump/<tag> (default: synthetic)")
    ap.add_argument("--data_dir", type=Path, default=None, help="its data dir (with --feats_dir)")
    ap.add_argument("--task", default="speech_four")
    ap.add_argument("--num_train", type=int, default=1000, help="synthetic: train utterances")
    ap.add_argument("--num_layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3, help="trainings per head; the fastest counts")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)   # the trainer's INFO lines go to its train.log only
    work = Path(tempfile.mkdtemp(prefix="etser_search_cost_"))
    if a.feats_dir is None:
        data_dir, feats_dir = synthetic(work / "corpus", a.num_train, a.num_layers, a.dim)
        what = f"synthetic {a.num_train} train utts, {a.num_layers} layers x {a.dim}"
    else:
        if a.data_dir is None:
            ap.error("--feats_dir needs --data_dir")
        data_dir, feats_dir, what = a.data_dir, a.feats_dir, str(a.feats_dir)
    cache: dict = {}
    # one warm-up read so that no head pays the cache's first load
    one_training("superb", ["max_epochs=1"], data_dir, feats_dir, a.task, work / "warmup", cache)
    rows = {}
    for name, head, extra in (("superb", "superb", []), ("superb 100 ep", "superb", ["patience=null"]),
                              ("paper draw 1", "paper", ["search_draw=1"]), ("paper", "paper", []), ("mlp", "mlp", [])):
        rows[name] = min((one_training(head, extra, data_dir, feats_dir, a.task,
                                       work / f"{name.replace(' ', '_')}_{i}", cache) for i in range(a.repeats)),
                         key=lambda r: r["seconds"])
        r = rows[name]
        print(f"{name:13s} {r['epochs']:4d} epochs {r['seconds']:8.2f} s {1000 * r['per_epoch']:8.1f} ms/epoch")
    sup, full, draw = rows["superb"], rows["superb 100 ep"], rows["paper draw 1"]
    print(f"{what}, task {a.task}: one paper-head draw / one superb training = {draw['seconds'] / sup['seconds']:.2f} "
          f"(whole trainings: superb stops early, the official protocol does not), "
          f"{draw['seconds'] / full['seconds']:.2f} (both 100 epochs), {draw['per_epoch'] / sup['per_epoch']:.2f} "
          "(per epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

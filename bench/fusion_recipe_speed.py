#!/usr/bin/env python3
"""Fusion training speed on REAL stage-2 dumps, through the recipe path (etser.featset -> FusionHead):
utterances/s of one training epoch per algorithm (after one warm-up epoch), the share of the epoch spent
building the inputs (layer average, standardisation, MERBench's frame alignment), and peak RSS growth.

Utterance-level algorithms read the pooled cache; frame-level ones the frames (held in memory, as training
does below preload_frames_gb).  Each algorithm runs in its own child process, so peaks do not hide each other.

  bench/fusion_recipe_speed.py --streams "speech=dump/A text=dump/B visual=dump/C" [--data_dir data] \\
      [--task multi_four] [--models attention,mult,...] [--threads 1] [--max_utts 0]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def one(algo: str, streams: dict, data_dir: Path, task_name: str, threads: int, max_utts: int) -> dict:
    import torch

    from etser.featset import Stream, iter_batches
    from etser.models.heads import build_head, input_kind
    from etser.tasks import get_task
    from etser.learn.train import apply_fusion_conf, load_config, load_split
    from etser.featset import read_meta

    torch.set_num_threads(threads)
    conf = apply_fusion_conf(load_config(ROOT / "conf/train/fusion.yaml", [f"head_conf.algo={algo}"]))
    task = get_task(task_name)
    kind = input_kind("fusion", conf["head_conf"])
    infos, sts = [], []
    from etser.models.heads import head_class
    for name, d in streams.items():
        m = read_meta(Path(d) / "train")
        layers = head_class("fusion").select_layers(conf["head_conf"], int(m["num_layers"]), m.get("frame_layers"))
        infos.append({"name": name, "layers": layers, "dim": int(m["dim"])})
        sts.append(Stream(name, Path(d), tuple(layers), kind))
    tr = load_split(task, data_dir, "train", sts, cache={})
    n = len(tr) if max_utts <= 0 else min(max_utts, len(tr))
    torch.manual_seed(0)
    model = build_head("fusion", conf["head_conf"], infos, task.output_size)
    opt = torch.optim.Adam(model.parameters(), lr=conf["optim_conf"]["lr"], weight_decay=1e-5)
    base = peak_rss_mib()
    times, prep = [], 0.0
    for epoch in range(2):
        t0 = time.perf_counter()
        prep = 0.0
        for idx in iter_batches(n, 32):
            batch = tr.batch(idx)
            t1 = time.perf_counter()
            inputs, lengths, present = model.inputs(batch)
            prep += time.perf_counter() - t1
            out = model.model(inputs, lengths, present)
            loss = task.loss(out.logits, batch["target"]) + out.aux_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return {"model": algo, "level": kind, "utt_per_s": n / times[-1], "prep_share": prep / times[-1],
            "peak_mib": peak_rss_mib() - base, "utts": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", required=True)
    ap.add_argument("--data_dir", type=Path, default=Path("data"))
    ap.add_argument("--task", default="multi_four")
    ap.add_argument("--models", default="attention,tfn,lmf,misa,mmim,mult,mfn,graph_mfn,mfm,mctn")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max_utts", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    streams = dict(item.split("=", 1) for item in a.streams.split())
    if a.child:
        print(json.dumps(one(a.child, streams, a.data_dir, a.task, a.threads, a.max_utts)))
        return 0
    rows = []
    for algo in a.models.split(","):
        r = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", algo], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{algo}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ref = next((r["utt_per_s"] for r in rows if r["model"] == "attention"), rows[0]["utt_per_s"])
    print("| model | input | utt/s | input building | peak MiB | vs attention |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['level']} | {r['utt_per_s']:.0f} | {100 * r['prep_share']:.0f} % | "
              f"{r['peak_mib']:.0f} | {r['utt_per_s'] / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

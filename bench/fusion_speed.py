#!/usr/bin/env python3
"""Training speed of the fusion models on random features: utterances/s for one epoch, and peak memory.

Inputs have the seeds' feature dims (HuBERT-Base 768, Baichuan-7B 4096, CLIP-Large 768) and realistic lengths
after MERBench's frm_align compression (text ~33 tokens -> ~6 frames; every modality at the text's length);
utterance-level models get one vector per modality.  Each model is built from its conf/fusion/<name>.yaml
defaults, trained with Adam for one epoch (batch 32), and reported as utterances/s and peak memory: CUDA peak
allocation on a GPU, else the growth of peak RSS during the epoch over the state before it (model and data
built; each model runs in its own child process, so one model's peak never hides another's).  Also prints
each frame model's speed relative to the Attention baseline.

  bench/fusion_speed.py [--models mult,mfn,...] [--num_utts 256] [--frames 6] [--device cpu] [--threads 1]
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from etser.models.fusion import FUSION_MODELS, build_fusion  # noqa: E402
from etser.learn.tune import load_search_space  # noqa: E402

DIMS = {"speech": 768, "text": 4096, "visual": 768}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def epoch(name: str, n: int, frames: int, batch: int, device: torch.device) -> tuple[float, float]:
    conf = load_search_space(ROOT / "conf" / "fusion" / f"{name}.yaml")
    torch.manual_seed(0)
    model = build_fusion(name, DIMS, 7, conf["model"]).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=float(conf["train"]["lr"]), weight_decay=1e-5)
    frame = model.level == "frame"
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(1, frames // 2), frames + 1, (n,), generator=g)
    data = {m: torch.randn(n, frames, d, generator=g) if frame else torch.randn(n, d, generator=g)
            for m, d in DIMS.items()}
    labels = torch.randint(0, 7, (n,), generator=g)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        x = {m: v[s:s + batch].to(device) for m, v in data.items()}
        lens = {m: lengths[s:s + batch].to(device) for m in DIMS} if frame else None
        out = model(x, lens)
        loss = F.cross_entropy(out.logits, labels[s:s + batch].to(device)) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        mem = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        mem = peak_rss_mib() - rss0
    return n / (time.perf_counter() - t0), mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(FUSION_MODELS))
    ap.add_argument("--num_utts", type=int, default=256)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one model, JSON result
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        ups, mem = epoch(args.one, args.num_utts, args.frames, args.batch, device)
        print(json.dumps({"ups": ups, "mem": mem}))
        return
    names = args.models.split(",")
    unknown = [n for n in names if n not in FUSION_MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; known: {list(FUSION_MODELS)}")
    print(f"device {device}, {args.num_utts} utterances, batch {args.batch}, frames <= {args.frames}, dims {DIMS}")
    print(f"{'model':<10} {'level':<9} {'utt/s':>9} {'peak MiB':>9} {'vs attention':>12}")
    base = None
    for name in (["attention"] if "attention" not in names else []) + names:
        cmd = [sys.executable, __file__, "--one", name, "--num_utts", str(args.num_utts), "--frames",
               str(args.frames), "--batch", str(args.batch), "--device", args.device, "--threads", str(args.threads)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        ups, mem = res["ups"], res["mem"]
        if name == "attention":
            base = ups
        if name in names:
            print(f"{name:<10} {FUSION_MODELS[name].level:<9} {ups:9.1f} {mem:9.1f} {ups / base:12.3f}")


if __name__ == "__main__":
    main()

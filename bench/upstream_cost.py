#!/usr/bin/env python3
"""CPU cost of speech upstreams per hour of audio: one stage-2 job over mini-corpus utterances.

    bench/upstream_cost.py [--configs "fbank_no_cmvn egemaps egemaps_lld compare_2016 compare_2016_lld
                            emotion2vec_base"] [--num_utts 60] [--num_threads 1] [--mini_dir DIR] [--work DIR]

Each config runs ``etser.extract.run_job`` (read, decode, resample to 16 kHz, the upstream, statistics,
arks) as stage 2 runs one job, single-threaded by default, over the same ``--num_utts`` utterances of the mini
corpus (generated into ``--mini_dir`` when absent), timed over its extraction loop (model loading left out).
Printed per config: audio seconds, wall seconds, CPU seconds of the process (every thread: on a busy
machine the wall time grows, the CPU time much less), CPU hours per hour of audio, and its ratio to the
first config's.  emotion2vec configs get a randomly initialised
model of emotion2vec base's size (FunASR's config: 768 dims, 4 + 8 blocks, 10 extra tokens) in the folder
format they read, since the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "local"))

from bench.extract_throughput import mini_wavs  # noqa: E402
from etser.features.extract import run_job  # noqa: E402
from etser.features.upstream import build_upstream  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "upstream"


def _cpu_seconds() -> float:
    """User + system CPU time of this process, every thread (the reading thread included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def emotion2vec_base_dir(path: Path) -> Path:
    """A random emotion2vec base folder (config.yaml + model.pt) with FunASR's architecture keys."""
    import torch

    from etser.features.emotion2vec import Emotion2vec

    conf = {"model": "Emotion2vec", "model_conf": {
        "depth": 8, "num_heads": 12, "norm_eps": 1e-05, "norm_affine": True, "embed_dim": 768, "mlp_ratio": 4.0,
        "layer_norm_first": False, "extractor_mode": "layer_norm", "normalize": True,
        "modalities": {"audio": {
            "prenet_depth": 4, "num_extra_tokens": 10, "use_alibi_encoder": True, "alibi_scale": 1.0,
            "learned_alibi": False, "learned_alibi_scale_per_head": True, "learned_alibi_scale_per_layer": False,
            "num_alibi_heads": 12, "model_depth": 8, "extractor_mode": "layer_norm",
            "feature_encoder_spec": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
            "conv_pos_width": 95, "conv_pos_groups": 16, "conv_pos_depth": 5, "conv_pos_pre_ln": False}}}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    torch.manual_seed(0)
    torch.save({"model": Emotion2vec(conf["model_conf"]).state_dict()}, path / "model.pt")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="fbank_no_cmvn egemaps egemaps_lld compare_2016 compare_2016_lld emotion2vec_base")
    ap.add_argument("--num_utts", type=int, default=60)
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--mini_dir", type=Path, default=Path("downloads/mini_emotiontalk"))
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="upstream_cost_"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    wavs = mini_wavs(args.mini_dir, args.num_utts)
    (data / "wav.scp").write_text("".join(f"u{i:04d} {p.resolve()}\n" for i, p in enumerate(wavs)))
    rows = []
    for name in args.configs.split():
        cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        if name.startswith("emotion2vec"):
            cfg["args"]["ckpt"] = str(emotion2vec_base_dir(work / "emotion2vec_base"))
        up = build_upstream(cfg)  # built before the clocks start: model loading is not counted
        before = _cpu_seconds()
        done = run_job(cfg, data, work / "dump" / name, nj=1, job=1, num_threads=args.num_threads, upstream=up)
        cpu = _cpu_seconds() - before
        rows.append((name, done["audio_seconds"], done["elapsed_seconds"], cpu))
    print(f"\n{args.num_utts} mini-corpus utterances, {args.num_threads} thread(s), one job")
    print(f"| config | audio s | wall s | CPU s | CPU h per h of audio | vs {rows[0][0]} |")
    print("|---|---|---|---|---|---|")
    for name, audio, wall, cpu in rows:
        print(f"| {name} | {audio:.1f} | {wall:.1f} | {cpu:.1f} | {cpu / audio:.4f} | "
              f"{(cpu / audio) / (rows[0][3] / rows[0][1]):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

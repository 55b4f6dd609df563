#!/usr/bin/env python3
"""Per-epoch training time of the superb head: from the pooled cache vs with the upstream in the loop.

S3PRL's emotion recipe runs the frozen upstream on every batch of every epoch.  This recipe runs it once
(stage 2) and trains from the per-layer time-mean/std; for the superb head that is exact (tests/test_heads.py).
Both paths here train the same head (conf/train/superb.yaml) on the same utterances in one run:

* upstream in the loop: read + resample each wav, randomly initialised base-size HuBERT (12 layers, 768 dims,
  S3PRL's ``hubert_local`` code; no weights needed) under no_grad, all 13 hidden states, the head's frame-level
  path, backward, Adam step; batch 4 with 8-step gradient accumulation, as S3PRL's ER config;
* pooled cache: the head's pooled path on (N, 13, 768) mean/std tensors in memory, batch 32.

Prints both per-epoch times, the ratio (goal >= 100), and the one-off extraction time for the cache.

  bench/train_speed.py [--data_dir data/train] [--num_utts 16] [--threads 1] [--pooled_epochs 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def random_hubert_base(path: Path) -> Path:
    """A converted S3PRL HuBERT Base checkpoint with random weights (for ``hubert_local``)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(0)
    model_cfg = HubertConfig(label_rate=50)          # defaults: 12 layers, 768 dims, 3072 FFN, 12 heads
    task_cfg = HubertPretrainingConfig(label_rate=50)
    symbols = [[str(i) for i in range(504)]]
    model = HubertModel(model_cfg, task_cfg, symbols)
    torch.save({"task_cfg": dataclasses.asdict(task_cfg), "model_cfg": dataclasses.asdict(model_cfg),
                "model_weight": model.state_dict(), "dictionaries_symbols": symbols}, path)
    return path


def utterances(data_dir: Path | None, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(utt, wav path): the first n of a data dir's wav.scp, or n random 2-4 s files in a temp dir."""
    if data_dir is not None:
        from etser.datadir import read_table

        wav = read_table(data_dir / "wav.scp")
        return list(wav.items())[:n]
    import soundfile as sf

    out = Path(tempfile.mkdtemp(prefix="etser_bench_wav_"))
    items = []
    for i in range(n):
        p = out / f"u{i:03d}.wav"
        sf.write(p, (0.1 * rng.standard_normal(int(16000 * rng.uniform(2, 4)))).astype(np.float32), 16000)
        items.append((f"u{i:03d}", str(p)))
    return items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, default=None, help="data dir with wav.scp (default: random audio)")
    ap.add_argument("--num_utts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pooled_epochs", type=int, default=50, help="pooled epochs timed (their mean is reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # S3PRL's HuBERT code uses the deprecated weight_norm: one warning per build, not informative here
    warnings.filterwarnings("ignore", message=".*weight_norm.*")

    from etser.features.audio import load_audio
    from etser.features.modalities.speech import pooled_features
    from etser.models.heads.superb import SuperbHead
    from etser.learn.train import load_config
    from etser.features.upstream import build_upstream

    conf = load_config(ROOT / "conf/train/superb.yaml")
    rng = np.random.default_rng(0)
    items = utterances(args.data_dir, args.num_utts, rng)
    labels = torch.as_tensor(rng.integers(0, 4, len(items)))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpt = random_hubert_base(Path(tmp) / "hubert_base_random.pt")
        upstream = build_upstream({"name": "hubert_local", "ckpt": str(ckpt)})
        print(f"random HuBERT Base built in {time.perf_counter() - t0:.1f} s; {len(items)} utterances, "
              f"{args.threads} thread(s)", flush=True)

        # one-off: the pooled cache (what stage 2 stores)
        t0 = time.perf_counter()
        _, mean, std = pooled_features(upstream, items)
        extract_s = time.perf_counter() - t0
        num_layers, dim = mean.shape[1:]
        mean, std = torch.from_numpy(mean), torch.from_numpy(std)
        audio_s = sum(len(load_audio(p)) for _, p in items) / 16000

        def make_head():
            torch.manual_seed(1)
            head = SuperbHead(num_layers, dim, 4, **conf["head_conf"])
            head.fit_normalizer(mean, std)
            return head, torch.optim.Adam(head.parameters(), **conf["optim_conf"])

        # S3PRL's way: upstream in the loop, batch 4, 8 accumulation steps
        head, opt = make_head()
        t0 = time.perf_counter()
        accum, bs = 8, 4
        opt.zero_grad()
        for step, s in enumerate(range(0, len(items), bs), 1):
            idx = list(range(s, min(s + bs, len(items))))
            wavs = [torch.from_numpy(load_audio(items[i][1])) for i in idx]
            hs = upstream(wavs)                                   # list of (B, T, D), no grad inside
            frames = torch.stack(hs, dim=2)                       # (B, T, L, D)
            lengths = torch.tensor([upstream.num_frames(len(w)) for w in wavs]).clamp(max=frames.shape[1])
            loss = F.cross_entropy(head.forward_frames(frames, lengths), labels[idx]) / accum
            loss.backward()
            if step % accum == 0 or s + bs >= len(items):
                torch.nn.utils.clip_grad_norm_(head.parameters(), conf["grad_clip"])
                opt.step()
                opt.zero_grad()
        loop_s = time.perf_counter() - t0

        # this recipe: pooled cache, batch 32
        head, opt = make_head()
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(args.pooled_epochs):
            perm = torch.randperm(len(items), generator=g)
            for s in range(0, len(items), conf["batch_size"]):
                idx = perm[s:s + conf["batch_size"]]
                loss = F.cross_entropy(head.forward_stream({"mean": mean[idx], "std": std[idx]}), labels[idx])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head.parameters(), conf["grad_clip"])
                opt.step()
        pooled_s = (time.perf_counter() - t0) / args.pooled_epochs

    print(f"upstream in the loop (S3PRL's way): {loop_s:.2f} s per epoch ({len(items)} utts, {audio_s:.1f} s audio)")
    print(f"pooled cache (this recipe):         {1000 * pooled_s:.2f} ms per epoch (mean of {args.pooled_epochs})")
    print(f"one-off extraction of the cache:    {extract_s:.2f} s (= {extract_s / loop_s:.2f} upstream-loop epochs)")
    print(f"speed-up per epoch: {loop_s / pooled_s:.0f}x (goal >= 100x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

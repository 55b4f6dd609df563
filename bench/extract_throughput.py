#!/usr/bin/env python3
"""Stage-2 throughput: the whole pipeline against the bare model, and storage per hour of audio.

    bench/extract_throughput.py [--mini_dir downloads/mini_emotiontalk] [--num_utts 120] [--num_threads 1]
                                [--repeats 2] [--work DIR]

A randomly initialised HuBERT Base (12 layers, 768 dims; Hugging Face format, the route of the shipped
conf/upstream/hubert_base.yaml, its batch policy and chunking) runs on ``--num_utts`` utterances of the mini
corpus (generated into ``--mini_dir`` when absent), in one process:

- pipeline: ``etser.features.extract.run_job`` as stage 2 runs it (read and decode 44.1 kHz files, resample, forward,
  pooled statistics, write the arks and scp), timed over its extraction loop;
- bare: the model's forward alone on the same batches, from tensors already in memory.

Printed: ratio = pipeline utterances/s / bare utterances/s (goal >= 0.9 on CPU; the reading runs in a
background thread while the model computes), best of ``--repeats`` alternating runs of each; then the
bytes per hour of audio of the pooled cache and of frame-level output of every layer in each frame dtype,
with the error of the lossy ones.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "local"))

from etser.features.dumpio import write_matrix  # noqa: E402
from etser.features.extract import run_job  # noqa: E402


def mini_wavs(mini_dir: Path, n: int) -> list[Path]:
    from emotiontalk.minicorpus import make_mini_corpus

    make_mini_corpus(mini_dir, progress=True)  # returns at once when the corpus is there
    wavs = sorted(p for p in (mini_dir / "Audio").rglob("*.wav") if not p.name.startswith("._"))
    if len(wavs) < n:
        raise SystemExit(f"{mini_dir} holds {len(wavs)} utterances, fewer than --num_utts {n}")
    step = len(wavs) / n  # spread over all groups and speakers
    return [wavs[int(i * step)] for i in range(n)]


def hubert_base_dir(path: Path, seed: int = 0) -> Path:
    import torch
    import transformers
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    HubertModel(HubertConfig()).save_pretrained(path)  # the defaults are HuBERT Base: 12 x 768, GroupNorm encoder
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mini_dir", type=Path, default=Path("downloads/mini_emotiontalk"))
    ap.add_argument("--num_utts", type=int, default=120)
    ap.add_argument("--num_threads", type=int, default=1, help="torch threads (stage 2 default: 1 per job)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--frame_utts", type=int, default=12, help="utterances used for the frame-level storage figures")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    import soundfile as sf
    import torch
    import yaml

    from etser.features.upstream import build_upstream, load_config

    torch.set_num_threads(args.num_threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="etser_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    wavs = mini_wavs(args.mini_dir, args.num_utts)
    data = work / "data"
    data.mkdir(exist_ok=True)
    infos = {p.stem: sf.info(str(p)) for p in wavs}
    (data / "wav.scp").write_text("".join(f"{p.stem} {p.resolve()}\n" for p in sorted(wavs, key=lambda p: p.stem)))
    (data / "utt2dur").write_text("".join(f"{u} {i.frames / i.samplerate:.4f}\n" for u, i in sorted(infos.items())))
    audio_s = sum(i.frames / i.samplerate for i in infos.values())
    rates = sorted({i.samplerate for i in infos.values()})

    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "upstream" / "hubert_base.yaml")
    cfg["ckpt"] = str(hubert_base_dir(work / "hubert_base"))
    (work / "hubert_base.yaml").write_text(yaml.safe_dump(cfg))
    up = build_upstream(cfg)
    print(f"model: random HuBERT Base, {sum(p.numel() for p in up.model.parameters()) / 1e6:.1f} M parameters; "
          f"{len(wavs)} mini-corpus utterances, {audio_s / 60:.1f} min of audio at {rates} Hz; "
          f"torch threads {args.num_threads}", file=sys.stderr)

    # Record the batches the pipeline gives the model, to replay exactly them on pre-loaded tensors.
    inner, batches = up.model, []

    def recording(batch):
        batches.append([w.clone() for w in batch])
        return inner(batch)

    up.model([torch.zeros(16000)])  # warm-up
    pipe_times, bare_times = [], []
    for r in range(args.repeats):
        up.model = recording if r == 0 else inner
        res = run_job(work / "hubert_base.yaml", data, work / f"dump{r}", nj=1, job=1, num_threads=args.num_threads,
                      upstream=up)
        pipe_times.append(res["elapsed_seconds"])
        up.model = inner
        t = time.time()
        outs = []
        for i, batch in enumerate(batches):
            hs = up(batch)
            if i < args.frame_utts:
                outs.append(hs)
        bare_times.append(time.time() - t)
        print(f"run {r + 1}: pipeline {pipe_times[-1]:.1f} s, bare forward {bare_times[-1]:.1f} s", file=sys.stderr)
    pipe, bare = min(pipe_times), min(bare_times)
    n = len(wavs)
    print(f"pipeline {n / pipe:.3f} utts/s (RTF {pipe / audio_s:.3f}), bare forward {n / bare:.3f} utts/s "
          f"(RTF {bare / audio_s:.3f}) over {len(batches)} batches")
    print(f"ratio pipeline/bare throughput: {bare / pipe:.3f} (goal >= 0.9)")

    # Storage per hour of audio.
    dump = work / "dump0" / "split1"
    pooled = sum((dump / f"pooled_{k}.1.ark").stat().st_size for k in ("mean", "std"))
    hours = audio_s / 3600
    meta = json.loads((dump / "done.1").read_text())
    print(f"pooled cache (mean + std, {meta['num_layers']} x {meta['dim']} float32 each): "
          f"{pooled / hours / 1e6:.1f} MB per hour of audio, {pooled / n / 1e3:.1f} kB per utterance "
          f"(EmotionTalk, 19,250 utterances: {pooled / n * 19250 / 1e9:.2f} GB)")
    frame_s = sum(len(w) for b in batches[:args.frame_utts] for w in b) / 16000
    for dtype in ("float32", "float16", "kaldi_compressed"):
        buf, errs = io.BytesIO(), []
        for k, hs in enumerate(outs):
            for i in range(hs[0].shape[0]):
                x = torch.stack([h[i] for h in hs], 1).reshape(hs[0].shape[1], -1).numpy()
                write_matrix(buf, f"u{k}_{i}", x, dtype)
                if dtype != "float32":
                    import kaldiio

                    one = io.BytesIO()
                    write_matrix(one, "u", x, dtype)
                    one.seek(0)
                    y = next(iter(kaldiio.load_ark(one)))[1]
                    errs.append(float(np.linalg.norm(y - x) / np.linalg.norm(x)))
        per_hour = buf.tell() / (frame_s / 3600)
        err = f", relative error {max(errs):.1e}" if errs else ""
        print(f"frames, all {len(hs)} layers, {dtype}: {per_hour / 1e9:.2f} GB per hour of audio "
              f"({per_hour / len(hs) / 1e9:.3f} GB per layer-hour; EmotionTalk 23.6 h: {per_hour * 23.6 / 1e9:.0f} GB)"
              f"{err}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

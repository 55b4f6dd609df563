#!/usr/bin/env python3
"""Stage 2 at corpus scale: a synthetic corpus of EmotionTalk's shape through the real extraction code.

    bench/stage2_scale.py --arch hubert_large --autocast bf16 --fraction 0.1 --device cuda --num_workers 14
    bench/stage2_scale.py --arch hubert_base --fraction 0.002 --device cpu            # CPU, a few minutes
    bench/stage2_scale.py --arch tiny --fraction 0.0005 --device cpu                  # seconds (the test)

The corpus: ``round(19250 * fraction)`` utterances, 44.1 kHz stereo 16-bit WAVs like the release.  The
release has no duration table, so durations are log-normal (mu 1.314, sigma 0.587 of ln seconds: the fit of
``0.8 s + 0.15 s per character`` of the 19,250 official transcripts), clipped to [0.5, 30] s and scaled to
the release's mean, 23.6 h / 19,250 = 4.41 s.  The model: random weights of the real architecture
(``--arch``), saved in the format of the shipped config ``conf/upstream/<arch>.yaml`` (Hugging Face
directory or S3PRL checkpoint), built by ``etser.features.upstream.build_upstream`` with that config's batching and
chunking (``--policy``, ``--autocast``, ``--max_items``, ``--max_seconds`` override it).

Then ``etser.features.extract.run_job`` + ``merge`` run on the corpus as stage 2 runs them (decode and resample in
``--num_workers`` processes, batch, forward, pooled statistics, arks), and the model's forward alone replays
the same batches on tensors already on the device.  Printed (and written to ``--json``):
utterances/s, audio seconds per second, the share of the pipeline's wall time spent in the forward,
peak device memory, peak host memory (this process + its workers) and its growth during the pipeline,
pipeline ÷ bare forward, batch and padding figures, and the projected time for the full corpus (23.6 h at
the pipeline's audio rate).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL_UTTS = 19250
FULL_SECONDS = 23.6 * 3600
LOGNORMAL = (1.314, 0.587)  # ln-seconds mean and std fitted to the transcripts' lengths (see the docstring)
RATE = 44100

ARCHS = ("tiny", "hubert_base", "hubert_large", "wav2vec2_base", "wav2vec2_large", "wavlm_base", "wavlm_large",
         "whisper_base", "whisper_large")


# ---------------------------------------------------------------- corpus

def durations(n: int, seed: int = 0) -> np.ndarray:
    """``n`` utterance lengths in seconds with EmotionTalk's mean (4.41 s) and a log-normal tail to 30 s."""
    rng = np.random.default_rng(seed)
    d = np.clip(np.exp(rng.normal(*LOGNORMAL, n)), 0.5, 30.0)
    return np.clip(d * (FULL_SECONDS / FULL_UTTS) / d.mean(), 0.5, 30.0)


def make_corpus(root: Path, fraction: float, seed: int = 0) -> tuple[Path, float]:
    """WAVs and a data dir (wav.scp, utt2dur, utt2spk) under ``root``; reused when already made alike."""
    import soundfile as sf

    n = max(2, round(FULL_UTTS * fraction))
    data = root / "data"
    stamp = {"utts": n, "seed": seed, "rate": RATE, "lognormal": LOGNORMAL}
    done = root / "corpus.json"
    if done.is_file() and json.loads(done.read_text()).get("stamp") == stamp:
        return data, json.loads(done.read_text())["seconds"]
    shutil.rmtree(root, ignore_errors=True)
    (root / "wav").mkdir(parents=True)
    data.mkdir()
    rng = np.random.default_rng(seed + 1)
    # Speech-like level noise, low-passed a little; utterances are random slices of one 40 s buffer.
    base = rng.standard_normal((40 * RATE, 2)).astype(np.float32)
    base = (0.08 * (base + np.roll(base, 1, axis=0))).clip(-1, 1)
    scp, dur, spk = [], [], []
    total = 0.0
    for i, sec in enumerate(durations(n, seed)):
        samples = int(round(sec * RATE))
        start = int(rng.integers(0, len(base) - samples))
        utt = f"spk{i % 50:02d}-utt{i:05d}"
        path = root / "wav" / f"{utt}.wav"
        # A gain and a slow envelope of its own, so utterances differ in their statistics as speech does.
        t = np.arange(samples) / RATE
        wobble = np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t + rng.uniform(0, 6.3))
        env = rng.uniform(0.3, 1.5) * (0.55 + 0.45 * wobble)
        sf.write(path, (base[start:start + samples] * env[:, None].astype(np.float32)).clip(-1, 1), RATE,
                 subtype="PCM_16")
        scp.append(f"{utt} {path.resolve()}\n")
        dur.append(f"{utt} {samples / RATE:.4f}\n")
        spk.append(f"{utt} spk{i % 50:02d}\n")
        total += samples / RATE
    for name, lines in (("wav.scp", scp), ("utt2dur", dur), ("utt2spk", spk)):
        (data / name).write_text("".join(sorted(lines)))
    done.write_text(json.dumps({"stamp": stamp, "seconds": total}) + "\n")
    return data, total


# ---------------------------------------------------------------- models (random weights, real shapes)

def _conv(dim: int) -> dict:
    return {"conv_dim": (dim,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_kernel": (10, 3, 3, 3, 3, 2, 2)}


def make_model(arch: str, path: Path, seed: int = 0) -> tuple[str, Path]:
    """Save a randomly initialised ``arch`` at ``path`` (once); returns (shipped config name, checkpoint)."""
    import torch

    large = arch.endswith("_large")
    conf = {"tiny": "hubert_large"}.get(arch, arch)
    if arch.startswith("wavlm"):
        ckpt = path / "model.pt"
    else:
        ckpt = path
    if (path / "ok").is_file():
        return conf, ckpt
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    torch.manual_seed(seed)
    size = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096) if large \
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    norm = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True) if large \
        else dict(feat_extract_norm="group", do_stable_layer_norm=False)
    if arch == "tiny":  # a 2-layer HuBERT with the Large models' LayerNorm encoder: the benchmark's test
        size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **_conv(16))
        norm = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
    if arch in ("tiny", "hubert_base", "hubert_large", "wav2vec2_base", "wav2vec2_large"):
        from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                                  Wav2Vec2Model)

        if arch.startswith("wav2vec2"):
            model = Wav2Vec2Model(Wav2Vec2Config(**size, **norm))
        else:
            model = HubertModel(HubertConfig(**size, **norm))
        model.save_pretrained(path)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=large,
                                 return_attention_mask=True).save_pretrained(path)
    elif arch.startswith("wavlm"):
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        cfg = {"extractor_mode": "layer_norm" if large else "default", "encoder_layers": size["num_hidden_layers"],
               "encoder_embed_dim": size["hidden_size"], "encoder_ffn_embed_dim": size["intermediate_size"],
               "encoder_attention_heads": size["num_attention_heads"], "layer_norm_first": large,
               "normalize": large, "relative_position_embedding": True, "num_buckets": 320,
               "max_distance": 800, "gru_rel_pos": True}
        torch.save({"cfg": cfg, "model": WavLM(WavLMConfig(cfg)).state_dict()}, ckpt)
    elif arch.startswith("whisper"):
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        d, layers, heads = (1280, 32, 20) if large else (512, 6, 8)
        cfg = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=d, encoder_layers=layers,
                            encoder_attention_heads=heads, encoder_ffn_dim=4 * d, decoder_layers=1,
                            decoder_attention_heads=heads, decoder_ffn_dim=4 * d, max_source_positions=1500,
                            max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=1)  # the decoder is not loaded by the upstream: kept tiny
        WhisperModel(cfg).save_pretrained(path)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    else:
        raise SystemExit(f"--arch {arch}: one of {', '.join(ARCHS)}")
    (path / "ok").write_text("")
    return conf, ckpt


# ---------------------------------------------------------------- measuring

class TimedModel:
    """Wraps the upstream's model: the time and input lengths of every call (device synchronised)."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.seconds, self.batches, self.first_call = 0.0, [], None

    def _sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def __call__(self, wavs):
        self._sync()
        t = time.perf_counter()
        if self.first_call is None:
            self.first_call = t
        out = self.model(wavs)
        self._sync()
        self.seconds += time.perf_counter() - t
        self.batches.append([len(w) for w in wavs])
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


def _rss_mb(pid: int | str = "self") -> float:
    """Proportional set size (shared library pages split between the processes mapping them), else RSS:
    every worker maps the same torch libraries, which RSS would count once per worker."""
    for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(name) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return 0.0


class HostMemory:
    """Peak resident memory of this process, its decoding workers and their fork server, sampled."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        from multiprocessing import forkserver

        server = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)  # the workers' parent
        pids = [p.pid for p in multiprocessing.active_children()] + ([server] if server else [])
        return _rss_mb() + sum(_rss_mb(pid) for pid in pids)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def padded_plan(lengths: list[int], max_items: int, max_samples: int) -> list[list[int]]:
    """The batches the padded policy would form from these segment lengths (longest first, as extraction)."""
    out, cur = [], []
    for n in sorted(lengths, reverse=True):
        if cur and (len(cur) >= max_items or max(cur[0], n) * (len(cur) + 1) > max_samples):
            out.append(cur)
            cur = []
        cur.append(n)
    return out + ([cur] if cur else [])


def bare_forward(up, timed: TimedModel, batches: list[list[int]], seed: int = 0) -> float:
    """Seconds of the forward alone on these batches, inputs made on the device beforehand."""
    import torch

    g = torch.Generator().manual_seed(seed)
    timed.seconds, timed.batches = 0.0, []
    for lengths in batches:
        wavs = [(0.1 * torch.randn(n, generator=g)).to(up.device) for n in lengths]
        up(wavs)
    return timed.seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="hubert_large", choices=ARCHS)
    ap.add_argument("--fraction", type=float, default=0.002, help="of EmotionTalk's 19,250 utterances")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--policy", default=None, choices=("equal_length", "padded"), help="default: the config's")
    ap.add_argument("--autocast", default="config", choices=("config", "none", "bf16", "fp16"))
    ap.add_argument("--max_items", type=int, default=None)
    ap.add_argument("--max_seconds", type=float, default=None)
    ap.add_argument("--num_threads", type=int, default=1, help="torch threads of the job (stage 2's --num_threads)")
    ap.add_argument("--num_workers", type=int, default=None, help="decoding processes (default: run_job's)")
    ap.add_argument("--compare_padded", action="store_true",
                    help="also time the bare forward on padded batches of the same segments (GroupNorm models: "
                         "what the inexact padded policy would cost)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (corpus and model kept for reuse)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from etser.features.extract import merge, run_job
    from etser.features.upstream import build_upstream, load_config

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    work = args.work or Path(tempfile.mkdtemp(prefix="etser_stage2_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data, audio_s = make_corpus(work / f"corpus_{args.fraction:g}_{args.seed}", args.fraction, args.seed)
    t_corpus = time.perf_counter() - t0
    conf, ckpt = make_model(args.arch, work / "models" / args.arch, args.seed)
    cfg = load_config(ROOT / "conf" / "upstream" / f"{conf}.yaml")
    if cfg["factory"]:
        cfg["args"]["ckpt"] = str(ckpt)
    else:
        cfg["ckpt"] = str(ckpt)
    if args.policy:
        cfg["batch"]["policy"] = args.policy
    if args.autocast != "config":
        cfg["autocast"] = None if args.autocast == "none" else args.autocast
    for key in ("max_items", "max_seconds"):
        if getattr(args, key) is not None:
            cfg["batch"][key] = getattr(args, key)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    torch.set_num_threads(args.num_threads)
    t0 = time.perf_counter()
    up = build_upstream(cfg, str(device))  # the padded policy's equality check runs here
    t_build = time.perf_counter() - t0
    params = sum(p.numel() for p in up.model.parameters()) / 1e6 if hasattr(up.model, "parameters") else float("nan")
    timed = TimedModel(up.model, device)
    up.model = timed
    max_n = int(min(cfg["chunk"]["seconds"], 30.0) * 16000)
    up([torch.zeros(max_n)] * min(2, int(cfg["batch"]["max_items"])))  # warm-up: kernels, allocator, autotuning
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed.seconds, timed.batches, timed.first_call = 0.0, [], None

    out = work / "dump"
    shutil.rmtree(out, ignore_errors=True)
    with HostMemory() as mem:
        before = mem.now()
        t0 = time.perf_counter()
        res = run_job(cfg, data, out, nj=1, job=1, ngpu=1 if device.type == "cuda" else 0,
                      num_threads=args.num_threads, upstream=up, num_workers=args.num_workers)
        merge(cfg, data, out, nj=1, name=args.arch)
        t_pipe = time.perf_counter() - t0
    loop = res["elapsed_seconds"]
    # Until the first batch reaches the model: reading the tables, starting the workers, the first decodes.
    # Paid once per job whatever the corpus size, so the projection adds it once.
    startup = min(max(0.0, timed.first_call - t0), loop) if timed.first_call is not None else 0.0
    rate = audio_s / max(loop - startup, 1e-9)
    fwd_pipe = timed.seconds
    batches = list(timed.batches)
    gpu_peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None
    t_bare = bare_forward(up, timed, batches, args.seed)
    segs = [n for b in batches for n in b]
    padded_samples = sum(max(b) * len(b) for b in batches)
    bare_padded = None
    if args.compare_padded:
        plan = padded_plan(segs, int(cfg["batch"]["max_items"]), int(float(cfg["batch"]["max_seconds"]) * 16000))
        bare_padded = (bare_forward(up, timed, plan, args.seed), len(plan))
    n = res["utts"]
    workers = args.num_workers if args.num_workers is not None else (args.num_threads if device.type == "cuda" else 0)
    fig = {
        "arch": args.arch, "params_M": round(params, 2), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "policy": cfg["batch"]["policy"], "autocast": cfg["autocast"], "max_items": int(cfg["batch"]["max_items"]),
        "max_seconds": float(cfg["batch"]["max_seconds"]), "num_threads": args.num_threads, "num_workers": workers,
        "utts": n, "audio_seconds": round(audio_s, 2), "fraction": args.fraction,
        "pipeline_seconds": round(t_pipe, 3), "loop_seconds": loop,
        "utts_per_second": n / loop, "audio_seconds_per_second": audio_s / loop,
        "forward_share": fwd_pipe / loop, "bare_seconds": round(t_bare, 3),
        "pipeline_over_bare": t_bare / loop,
        "pipeline_over_bare_after_startup": t_bare / max(loop - startup, 1e-9),
        "batches": len(batches), "segments": len(segs), "items_per_batch": len(segs) / len(batches),
        "padding_share": 1 - sum(segs) / padded_samples,
        "peak_gpu_mb": gpu_peak, "peak_host_mb": mem.peak, "host_growth_mb": mem.peak - before,
        "startup_seconds": startup,
        "projected_full_seconds": startup + FULL_SECONDS / rate,
        "projected_full_bare_seconds": FULL_SECONDS / (audio_s / t_bare),
        "corpus_seconds": round(t_corpus, 1), "build_seconds": round(t_build, 1),
    }
    if bare_padded is not None:
        fig["bare_padded_seconds"], fig["bare_padded_batches"] = round(bare_padded[0], 3), bare_padded[1]
        fig["padded_speedup"] = t_bare / bare_padded[0]
    print_figures(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_figures(f: dict) -> None:
    gpu = f"{f['peak_gpu_mb']:.0f} MB" if f["peak_gpu_mb"] is not None else "n/a (cpu)"
    lines = [
        f"stage2_scale: {f['arch']} ({f['params_M']} M parameters, random weights) on {f['device_name']}, "
        f"policy {f['policy']}, autocast {f['autocast']}, batch <= {f['max_items']} items / {f['max_seconds']:g} s, "
        f"{f['num_threads']} threads, {f['num_workers']} decoding workers",
        f"corpus: {f['utts']} utterances, {f['audio_seconds'] / 3600:.3f} h of 44.1 kHz stereo "
        f"(fraction {f['fraction']:g} of 19,250 / 23.6 h)",
        f"pipeline: {f['loop_seconds']:.2f} s ({f['pipeline_seconds']:.2f} s with merge): "
        f"{f['utts_per_second']:.2f} utts/s, {f['audio_seconds_per_second']:.1f} audio s/s",
        f"forward share of wall time: {f['forward_share']:.3f}; first batch after {f['startup_seconds']:.2f} s "
        "(workers starting, first decodes)",
        f"bare forward on the same {f['batches']} batches: {f['bare_seconds']:.2f} s; "
        f"pipeline / bare: {f['pipeline_over_bare']:.3f} (goal >= 0.9; "
        f"{f['pipeline_over_bare_after_startup']:.3f} after the first batch)",
        f"batches: {f['items_per_batch']:.2f} segments per batch, padding {100 * f['padding_share']:.1f} % of samples",
        f"peak device memory: {gpu}; peak host memory {f['peak_host_mb']:.0f} MB "
        f"(+{f['host_growth_mb']:.0f} MB during the pipeline, workers included)",
        f"projected full corpus (23.6 h, start-up once + the audio at the rate after it): "
        f"{f['projected_full_seconds']:.0f} s = {f['projected_full_seconds'] / 60:.1f} min "
        f"(bare forward: {f['projected_full_bare_seconds'] / 60:.1f} min)",
    ]
    if "padded_speedup" in f:
        lines.append(f"same segments in padded batches (bare, {f['bare_padded_batches']} batches): "
                     f"{f['bare_padded_seconds']:.2f} s, {f['padded_speedup']:.2f}x faster than the exact policy")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())

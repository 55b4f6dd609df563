#!/usr/bin/env python3
"""Stage-2 throughput of the text and visual pipelines against the bare encoder, and visual peak memory.

    bench/text_visual_throughput.py [--num_texts 300] [--num_videos 24] [--frames 10] [--repeats 2]
                                    [--num_threads 1] [--work DIR]

Randomly initialised Hugging Face models of the shipped sizes (no download): BERT-base (12 layers x 768, a char
vocabulary) for text and the CLIP ViT-B/32 vision tower (12 x 768, 224 px) for video, on synthetic transcripts and synthetic face
videos (96 px H.264, Haar face crop).  In one process:

- pipeline: ``etser.features.extract.run_job`` as stage 2 runs it (read the table, tokenise / decode + detect + crop +
  preprocess in the prefetch thread, forward, pooled statistics, write arks and scp), its extraction loop;
- bare: the encoder's forward alone on the same batches, from inputs prepared beforehand.

Printed: ratio = pipeline items/s / bare items/s (goal >= 0.9), best of ``--repeats``; then the peak RSS of a
visual job (a fresh ``python -m etser.features.extract job`` process) with N and 4 N videos, and their ratio (goal ~1:
memory independent of the number of videos).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from etser.features.extract import run_job  # noqa: E402
from etser.features import modality as modalities  # noqa: E402
from etser.features.upstream import load_config  # noqa: E402

CHARS = "今天下午我们开会吃饭很开心高兴快乐太好了难过伤心哭失望生气愤怒讨厌烦真的是吗呢啊一个人去看电影"


def text_model(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(CHARS))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    BertModel(BertConfig(vocab_size=len(vocab))).save_pretrained(path)  # BERT-base sizes
    return path


def image_model(path: Path) -> Path:
    import torch
    import transformers as T

    torch.manual_seed(0)
    T.CLIPVisionModel(T.CLIPVisionConfig(patch_size=32)).save_pretrained(path)  # ViT-B/32 sizes
    T.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(path)
    return path


def bare_seconds(cfg: dict, encoder, data: Path) -> float:
    """The forward passes alone: the same batches, inputs prepared beforehand."""
    mod = modalities.of(cfg)
    src, table = mod.read_inputs(cfg, data)
    job = modalities.Job(data, src, table, mod.order(cfg, sorted(table), table, data),
                         lambda u: mod.where(u, src, table), "cpu", 1, None, 8)
    load = mod.loader(cfg, encoder, job)
    prepared = [(u, load(u)) for u in job.order]
    t = time.perf_counter()
    for _ in mod.encoded(cfg, encoder, prepared):
        pass
    return time.perf_counter() - t


def ratio(cfg: dict, data: Path, out: Path, repeats: int, threads: int) -> tuple[float, float, float]:
    import torch

    torch.set_num_threads(threads)
    encoder = modalities.of(cfg).build(cfg, "cpu")
    pipe, bare = [], []
    for r in range(repeats):
        bare.append(bare_seconds(cfg, encoder, data))
        pipe.append(run_job(cfg, data, out / f"r{r}", nj=1, job=1, num_threads=threads,
                            upstream=encoder)["elapsed_seconds"])
    return min(bare) / min(pipe), min(pipe), min(bare)


def peak_rss_mb(cfg_path: Path, data: Path, out: Path) -> float:
    """Peak RSS of a fresh stage-2 job process, as its last log line reports it."""
    import re

    proc = subprocess.run([sys.executable, "-m", "etser.features.extract", "job", "--config", str(cfg_path), "--data",
                           str(data), "--dir", str(out), "--nj", "1", "--job", "1"], cwd=ROOT, text=True,
                          stderr=subprocess.PIPE, check=False)
    found = re.findall(r"peak RSS (\d+) MB", proc.stderr)
    if proc.returncode or not found:
        raise RuntimeError(f"visual job failed: {proc.stderr[-2000:]}")
    return float(found[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num_texts", type=int, default=300)
    ap.add_argument("--num_videos", type=int, default=24)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    import yaml
    from helpers_video import EXPRESSIONS, face_video

    work = Path(a.work or tempfile.mkdtemp(prefix="tv_bench_"))
    rng = np.random.default_rng(0)
    chars = list(CHARS)
    texts = {f"t{i:04d}": "".join(rng.choice(chars, rng.integers(10, 60))) for i in range(a.num_texts)}
    tdata = work / "text_data"
    tdata.mkdir(parents=True, exist_ok=True)
    (tdata / "text_raw").write_text("".join(f"{u} {t}\n" for u, t in texts.items()), encoding="utf-8")
    tcfg = load_config({"modality": "text", "name": "hf_text", "ckpt": str(text_model(work / "bert")),
                        "batch": {"max_items": 32, "max_tokens": 4096}})
    r, p, b = ratio(tcfg, tdata, work / "text_dump", a.repeats, a.num_threads)
    ntok = sum(len(t) for t in texts.values())
    print(f"text: {a.num_texts} transcripts, {ntok} tokens: pipeline {p:.2f} s, bare forward {b:.2f} s, "
          f"ratio {r:.3f}")

    def videos(n: int, tag: str) -> Path:
        d = work / f"video_data_{tag}"
        d.mkdir(parents=True, exist_ok=True)
        rows = [f"v{i:04d} {face_video(work / 'mp4' / f'v{i:04d}.mp4', list(EXPRESSIONS)[i % 4], i % 3, n=a.frames, seed=i)}"
                if not (work / "mp4" / f"v{i:04d}.mp4").is_file() else f"v{i:04d} {work / 'mp4' / f'v{i:04d}.mp4'}"
                for i in range(n)]
        (d / "video.scp").write_text("\n".join(rows) + "\n")
        return d

    vcfg_user = {"modality": "visual", "name": "hf_image", "ckpt": str(image_model(work / "clip")),
                 "sampling": {"mode": "all"}, "face": {"crop": "haar", "size": 224}, "batch": {"max_items": 32}}
    vdata = videos(a.num_videos, "n")
    r, p, b = ratio(load_config(vcfg_user), vdata, work / "video_dump", a.repeats, a.num_threads)
    print(f"visual: {a.num_videos} videos x {a.frames} frames (decode + Haar crop + preprocess): pipeline {p:.2f} s, "
          f"bare forward {b:.2f} s, ratio {r:.3f}")
    cfg_path = work / "visual.yaml"
    cfg_path.write_text(yaml.safe_dump(vcfg_user))
    small = peak_rss_mb(cfg_path, vdata, work / "mem_n")
    big = peak_rss_mb(cfg_path, videos(4 * a.num_videos, "4n"), work / "mem_4n")
    print(f"visual job peak RSS: {a.num_videos} videos {small:.0f} MB, {4 * a.num_videos} videos {big:.0f} MB, "
          f"ratio {big / small:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/stage2_scale.py in CI size: a tiny model on 10 synthetic utterances prints every figure, sanely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import stage2_scale  # noqa: E402


def test_durations_have_emotiontalks_shape():
    d = stage2_scale.durations(19250)
    assert abs(d.mean() - 23.6 * 3600 / 19250) < 0.05
    assert d.min() >= 0.5 and d.max() <= 30.0
    assert 3.0 < np.median(d) < 4.5 and np.percentile(d, 99.9) > 15  # a long tail


def test_corpus_files_are_like_the_release(tmp_path):
    data, seconds = stage2_scale.make_corpus(tmp_path / "c", 0.0002)
    wav = dict(line.split(" ", 1) for line in (data / "wav.scp").read_text().splitlines())
    dur = {k: float(v) for k, v in (line.split() for line in (data / "utt2dur").read_text().splitlines())}
    assert len(wav) == 4 and set(dur) == set(wav)
    assert abs(sum(dur.values()) - seconds) < 1e-2
    for utt, path in wav.items():
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_16")
        assert abs(info.frames / 44100 - dur[utt]) < 1e-3


def test_padded_plan_follows_the_batch_limits():
    plan = stage2_scale.padded_plan([100, 300, 200, 250, 50], max_items=2, max_samples=550)
    assert plan == [[300], [250, 200], [100, 50]]


def test_benchmark_prints_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "stage2_scale.py"), "--arch", "tiny",
                        "--fraction", "0.0005", "--device", "cpu", "--num_workers", "2", "--compare_padded",
                        "--work", str(tmp_path / "work"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["utts"] == 10 and f["num_workers"] == 2 and f["policy"] == "padded"
    assert 30 < f["audio_seconds"] < 60  # ten utterances of 4.4 s on average
    assert f["utts_per_second"] > 0
    assert abs(f["audio_seconds_per_second"] * f["loop_seconds"] - f["audio_seconds"]) < 0.1
    assert 0 < f["forward_share"] < 1
    assert 0 < f["pipeline_over_bare"] < 1.5
    assert f["bare_seconds"] > 0 and f["batches"] >= 1 and f["segments"] >= 10
    assert 0 <= f["padding_share"] < 1
    assert f["peak_gpu_mb"] is None and f["peak_host_mb"] > 50 and f["host_growth_mb"] < f["peak_host_mb"]
    # the projection is the full corpus at the measured audio rate
    rate = f["audio_seconds"] / (f["loop_seconds"] - f["startup_seconds"])
    assert 0 <= f["startup_seconds"] < f["loop_seconds"]
    want = f["startup_seconds"] + 23.6 * 3600 / rate
    assert abs(f["projected_full_seconds"] - want) < 1e-3 * want  # audio_seconds is rounded in the json
    assert f["padded_speedup"] > 0
    text = r.stdout
    for words in ("utts/s", "audio s/s", "forward share of wall time", "pipeline / bare", "peak device memory",
                  "peak host memory", "projected full corpus", "padded batches"):
        assert words in text, words
    # the features were written and merged as stage 2 writes them
    meta = json.loads((tmp_path / "work" / "dump" / "meta.json").read_text())
    assert meta["num_utts"] == 10 and (tmp_path / "work" / "dump" / "pooled_mean.scp").is_file()


def test_video_benchmark_prints_ratios_and_the_projection(tmp_path):
    out = tmp_path / "video.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "video_hd_throughput.py"), "--heights", "144", "180",
                        "--seconds", "2", "--clips", "1", "--repeats", "2", "--per_frame", "--work", str(tmp_path / "work"),
                        "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["threads"] == 1 and f["repeats"] == 2 and f["detect_fps"] == 1 and set(f["heights"]) == {"144", "180"}
    for h in f["heights"].values():
        assert h["frames"] == 50 and h["decode_fps"] > 0 and h["pipeline_fps"] > 0 and h["per_frame_fps"] > 0
        assert abs(h["ratio"] - h["pipeline_fps"] / h["decode_fps"]) < 1e-9
    top = f["heights"]["180"]
    assert abs(f["projected_corpus_hours"] - 2.1e6 / (top["pipeline_fps"] * 16) / 3600) < 1e-9
    assert "144p: 1 clips x 2 s, 50 frames: decode only" in r.stdout and ", ratio " in r.stdout
    assert "detection on every frame" in r.stdout and "projected full corpus at 180p: 2.1 M frames" in r.stdout

"""Synthetic stage-1 data dirs and stage-2 feature dumps in the docs/DESIGN.md format, for the training tests.

Per utterance: frames h (T, L, D) drawn around a class-dependent offset (so the classes are learnable), then
``pooled_mean`` / ``pooled_std`` (L, D) pooled from them exactly as stage 2 does (population std over frames),
``frames`` (T, len(frame_layers)·D), ``utt2num_frames`` and ``meta.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import kaldiio
import numpy as np

from etser.datadir import write_table
from etser.featset import write_meta
from emotiontalk.labels import EMOTIONS_ALL


def make_frames(rng: np.random.Generator, label: int, num_layers: int, dim: int,
                min_frames: int = 5, max_frames: int = 40, separation: float = 1.0) -> np.ndarray:
    """(T, L, D) float32 frames; class ``label`` shifts dimension ``label % dim`` of every layer."""
    t = int(rng.integers(min_frames, max_frames + 1))
    x = rng.normal(size=(t, num_layers, dim)).astype(np.float32)
    x[:, :, label % dim] += separation
    # a second, scale-only cue: the std of dimension (label+1) carries the class too
    x[:, :, (label + 1) % dim] *= 1.0 + 0.5 * separation
    return x


def write_dump(set_dir: Path, frames: dict[str, np.ndarray], frame_layers: Sequence[int] | None,
               upstream: str = "synthetic", frame_rate: float = 50.0, modality: str = "speech") -> None:
    """Write one ``dump/<tag>/<set>/`` from per-utterance (T, L, D) frames."""
    set_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(frames)
    num_layers, dim = next(iter(frames.values())).shape[1:]
    with kaldiio.WriteHelper(f"ark,scp:{set_dir}/pooled_mean.ark,{set_dir}/pooled_mean.scp") as wm, \
            kaldiio.WriteHelper(f"ark,scp:{set_dir}/pooled_std.ark,{set_dir}/pooled_std.scp") as ws:
        for u in utts:
            x = frames[u].astype(np.float64)
            wm(u, x.mean(0).astype(np.float32))
            ws(u, x.std(0).astype(np.float32))
    if frame_layers:
        with kaldiio.WriteHelper(f"ark,scp:{set_dir}/frames.ark,{set_dir}/frames.scp") as wf:
            for u in utts:
                x = frames[u][:, list(frame_layers), :]
                wf(u, np.ascontiguousarray(x.reshape(x.shape[0], -1)))
    write_table(set_dir / "utt2num_frames", {u: frames[u].shape[0] for u in utts})
    # through the writer of the feature-set contract (etser.featset), with the fields stage 2 records
    write_meta(set_dir, {
        "upstream": upstream, "modality": modality, "config_hash": "0123abcd", "num_layers": int(num_layers),
        "dim": int(dim), "frame_rate": frame_rate, "frame_layers": list(frame_layers) if frame_layers else None,
        "dtype": {"pooled": "float32", "frames": "float32" if frame_layers else None},
        "num_utts": len(utts), "devices": ["cpu"], "pooled_stats_informative": True,
        "versions": {"torch": "test", "espnet-s3prl": "test"}, "config": {"name": upstream}})


def make_corpus(root: Path, sizes: dict[str, int] | None = None, num_layers: int = 3, dim: int = 8,
                frame_layers: Sequence[int] | None = (1, 2), seed: int = 0, separation: float = 1.0,
                classes: Sequence[str] = EMOTIONS_ALL, tag: str = "synthetic_0123abcd") -> tuple[Path, Path]:
    """Data dirs ``root/data/<set>`` and dumps ``root/dump/<tag>/<set>``; returns (data_dir, feats_dir).

    Labels cycle through ``classes`` in both utt2emo_audio and utt2emo_multi (multi shifted by one
    utterance, so the two tasks differ).  Speakers: S01..S04.
    """
    sizes = sizes or {"train": 70, "val": 21, "test": 21}
    rng = np.random.default_rng(seed)
    data_dir, feats_dir = root / "data", root / "dump" / tag
    for set_name, n in sizes.items():
        d = data_dir / set_name
        d.mkdir(parents=True, exist_ok=True)
        utts = [f"S{i % 4 + 1:02d}-{set_name}{i:04d}" for i in range(n)]
        audio = {u: classes[i % len(classes)] for i, u in enumerate(utts)}
        multi = {u: classes[(i + 1) % len(classes)] for i, u in enumerate(utts)}
        write_table(d / "utt2emo_audio", audio)
        write_table(d / "utt2emo_multi", multi)
        write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})
        frames = {u: make_frames(rng, EMOTIONS_ALL.index(audio[u]), num_layers, dim, separation=separation)
                  for u in utts}
        write_dump(feats_dir / set_name, frames, frame_layers)
    return data_dir, feats_dir

"""Emotion of new audio with a trained exp dir.

    python -m etser.infer --exp exp/<tag>/superb/speech_four/seed1 a.wav b.wav
    python -m etser.infer --exp exp/<tag>/superb/speech_four/seed1 --wav_scp data/test/wav.scp [--output out.txt]

Prints one line per file: ``id pred p_<class> ...`` (id = the path, or the utterance id of a wav.scp), after
a header line naming the columns.  The upstream is rebuilt from the exp dir's ``upstream.yaml`` (the copy of
the config the training features came from, checked against their hash) and run exactly as stage 2 runs it
(``etser.extract``: resampling to 16 kHz mono, chunking, batching), so the head sees the features it was
trained on.  Relative checkpoint paths in that config are taken from the current directory, as in stage 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np


def predict_files(exp_dir: Path, wavs: dict[str, str], device: str = "cpu") -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, probabilities (N, C), classes) for ``{id: wav path}``."""
    import torch

    from etser import extract
    from etser.checkpoint import load_best
    from etser.featset import StreamData
    from etser.tasks import task_from_spec
    from etser.upstream import UpstreamError, build_upstream, config_hash, load_config

    exp_dir = Path(exp_dir)
    model, info = load_best(exp_dir, device)
    task = task_from_spec(info["task_spec"], f"{exp_dir}/best.pt")
    if len(info["streams"]) != 1:
        raise ValueError(f"{exp_dir}: the model reads {len(info['streams'])} streams; inference from audio "
                         "files feeds one")
    (stream,) = info["streams"]
    up_path = exp_dir / "upstream.yaml"
    if not up_path.is_file():
        raise FileNotFoundError(f"{up_path} not found: the features of this training had no upstream.yaml "
                                "(retrain on features from stage 2 of this recipe)")
    cfg = load_config(up_path)
    expected = stream.get("config_hash")
    if expected and config_hash(cfg) != expected:
        raise UpstreamError(f"{up_path}: config hash {config_hash(cfg)} differs from the training features' "
                            f"{expected} ({exp_dir}/best.pt)")
    upstream = build_upstream(cfg, device)
    layers = list(stream["layers"])
    frames_kind = stream["kind"] == "frames"
    feats = extract.extract_wavs(upstream, wavs, frame_layers=layers if frames_kind else None)
    ids = list(wavs)
    probs = []
    with torch.no_grad():
        for u in ids:
            f = feats[u]
            if f.mean.shape[0] <= max(layers):
                raise ValueError(f"{wavs[u]}: the upstream gave {f.mean.shape[0]} layers, the head was trained on "
                                 f"layers {layers}")
            present = torch.ones(1, dtype=torch.bool)
            if frames_kind:
                x = torch.from_numpy(f.frames).reshape(f.frames.shape[0], len(layers), -1)
                data = StreamData("frames", [u], present, frames=[x])
            else:
                data = StreamData("pooled", [u], present, mean=torch.from_numpy(f.mean[layers])[None],
                                  std=torch.from_numpy(f.std[layers])[None])
            batch = {"utts": [u], "streams": {stream["name"]: data.batch([0], device)}}
            probs.append(task.posteriors(model(batch))[0])
    return ids, np.asarray(probs, dtype=np.float64), list(task.classes)


def format_lines(ids: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    lines = ["id pred " + " ".join(f"p_{c}" for c in classes)]
    for u, p in zip(ids, probs):
        lines.append(f"{u} {classes[int(np.argmax(p))]} " + " ".join(f"{x:.4f}" for x in p))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wavs", nargs="*", help="audio files (any rate, mono or stereo)")
    ap.add_argument("--exp", type=Path, required=True, help="a trained exp dir (with best.pt and upstream.yaml)")
    ap.add_argument("--wav_scp", type=Path, help="Kaldi wav.scp: 'id path' lines")
    ap.add_argument("--output", type=Path, help="also write the lines to this file")
    ap.add_argument("--ngpu", type=int, default=0)
    a = ap.parse_args(argv)
    from etser.audio import AudioLoadError
    from etser.datadir import read_table
    from etser.runtime import pick_device
    from etser.upstream import UpstreamError

    wavs: dict[str, str] = {}
    try:
        if a.wav_scp:
            wavs.update(read_table(a.wav_scp, allow_empty_value=False))
        for w in a.wavs:
            if w in wavs:
                raise ValueError(f"{w} given twice")
            wavs[w] = w
        if not wavs:
            ap.error("give wav files or --wav_scp")
        t0 = time.monotonic()
        ids, probs, classes = predict_files(a.exp, wavs, pick_device(a.ngpu))
    except (ValueError, FileNotFoundError, RuntimeError, UpstreamError, AudioLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lines = format_lines(ids, probs, classes)
    print("\n".join(lines))
    if a.output:
        a.output.write_text("\n".join(lines) + "\n")
    print(f"infer: {len(ids)} file(s) in {time.monotonic() - t0:.1f} s with {a.exp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Emotion of new audio with a trained exp dir.

    python -m etser.infer --exp exp/<tag>/superb/speech_four/seed1 a.wav b.wav some/folder/
    python -m etser.infer --exp exp/<tag>/superb/speech_four/seed1 --wav_scp data/test/wav.scp [--output out.tsv]

Prints a header line, then one tab-separated line per file: ``id  pred  p_<class>...  note`` (id = the path,
or the utterance id of a wav.scp; tabs keep paths with spaces parseable).  A folder stands for every audio
file under it (sorted).  A file that cannot be read does not stop the others: its line has ``pred`` ``-``,
probabilities ``nan`` and the reason in ``note`` (exit status 1 at the end); silent or near-silent input
(RMS below ``--silence_dbfs``) gets a warning in ``note`` beside its prediction.

The upstream is rebuilt from the exp dir's ``upstream.yaml`` (the copy of the config the training features
came from, checked against their hash) and run exactly as stage 2 runs it (``etser.extract``: resampling to
16 kHz mono, chunking, batching), so the head sees the features it was trained on.  Relative checkpoint
paths in that config are taken from the current directory, as in stage 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")


def expand_inputs(paths: Sequence[str]) -> dict[str, str]:
    """``{id: path}`` of files and of every audio file (by suffix) under the folders given, in order."""
    out: dict[str, str] = {}
    for p in paths:
        found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES) \
            if Path(p).is_dir() else [p]
        if Path(p).is_dir() and not found:
            raise ValueError(f"{p}: a folder without audio files ({', '.join(AUDIO_SUFFIXES)})")
        for f in found:
            if f in out:
                raise ValueError(f"{f} given twice")
            out[f] = f
    return out


def rms_dbfs(wav: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def predict_files(exp_dir: Path, wavs: dict[str, str], device: str = "cpu", silence_dbfs: float = -60.0
                  ) -> tuple[list[str], np.ndarray, list[str], dict[str, str]]:
    """(ids, probabilities (N, C), classes, notes) for ``{id: wav path}``.

    A file that cannot be read gets NaN probabilities and its reason in ``notes``; a near-silent one a note
    beside its prediction.
    """
    import torch

    from etser import extract
    from etser.audio import AudioLoadError, load_audio
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
    notes: dict[str, str] = {}
    loaded = []
    for u, path in wavs.items():  # one unreadable file must not cost the others their output
        try:
            wav = load_audio(path, u)
        except AudioLoadError as e:
            notes[u] = f"unreadable: {e}"
            continue
        level = rms_dbfs(wav)
        if level < silence_dbfs:
            notes[u] = (f"warning: near-silent input (RMS {level:.0f} dBFS < {silence_dbfs:g}): the prediction "
                        "says little" if np.isfinite(level) else "warning: silent input (all zeros): the "
                        "prediction says nothing")
        loaded.append((u, wav))
    feats = {f.utt: f for f in extract.iter_features(upstream, loaded, where=lambda u: f"{u} ({wavs[u]})",
                                                      frame_layers=layers if frames_kind else None)}
    ids = list(wavs)
    probs = np.full((len(ids), len(task.classes)), np.nan)
    with torch.no_grad():
        for i, u in enumerate(ids):
            if u not in feats:
                continue
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
            probs[i] = task.posteriors(model(batch))[0]
    return ids, probs, list(task.classes), notes


def _field(text: str) -> str:
    """One tab-separated field: tabs and line breaks in a path or message cannot split the line."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def format_lines(ids: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                 notes: dict[str, str] | None = None) -> list[str]:
    notes = notes or {}
    lines = ["\t".join(["id", "pred", *(f"p_{c}" for c in classes), "note"])]
    for u, p in zip(ids, probs):
        pred = "-" if np.isnan(p).any() else classes[int(np.argmax(p))]
        lines.append("\t".join([_field(u), pred, *(f"{x:.4f}" for x in p), _field(notes.get(u, ""))]))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wavs", nargs="*", help="audio files (any rate, mono or stereo) or folders of them")
    ap.add_argument("--exp", type=Path, required=True, help="a trained exp dir (with best.pt and upstream.yaml)")
    ap.add_argument("--wav_scp", type=Path, help="Kaldi wav.scp: 'id path' lines")
    ap.add_argument("--output", type=Path, help="also write the lines to this file")
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--silence_dbfs", type=float, default=-60.0,
                    help="inputs quieter than this RMS level get a warning beside their prediction (default -60)")
    a = ap.parse_args(argv)
    from etser.datadir import read_table
    from etser.runtime import pick_device
    from etser.upstream import UpstreamError

    wavs: dict[str, str] = {}
    try:
        if a.wav_scp:
            wavs.update(read_table(a.wav_scp, allow_empty_value=False))
        for k, w in expand_inputs(a.wavs).items():
            if k in wavs:
                raise ValueError(f"{w} given twice")
            wavs[k] = w
        if not wavs:
            ap.error("give wav files, folders or --wav_scp")
        t0 = time.monotonic()
        ids, probs, classes, notes = predict_files(a.exp, wavs, pick_device(a.ngpu), a.silence_dbfs)
    except (ValueError, FileNotFoundError, RuntimeError, UpstreamError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lines = format_lines(ids, probs, classes, notes)
    print("\n".join(lines))
    if a.output:
        a.output.write_text("\n".join(lines) + "\n")
    for u in ids:
        if u in notes:
            print(f"infer: {u}: {notes[u]}", file=sys.stderr)
    bad = sum(n.startswith("unreadable") for n in notes.values())
    print(f"infer: {len(ids)} file(s), {bad} unreadable, in {time.monotonic() - t0:.1f} s with {a.exp}",
          file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

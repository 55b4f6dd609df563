"""Predictions of a trained exp dir on new recordings: the emotion (a speech, text or visual head, a fusion
model) or the caption (a captioner).  docs/inference.md says what it takes and prints.

    python -m etser.learn.infer --exp exp/<tag>/superb/speech_four/seed1 a.wav b.mp4 "my folder/"
    python -m etser.learn.infer --exp exp/fusion_<tagA>+<tagB>+<tagC>/attention/multi_four/seed1 clips/ --text clips.txt
    python -m etser.learn.infer --exp exp/<tag>/superb/text_four/seed1 --text transcripts.txt
    python -m etser.learn.infer --exp exp/caption/<tag>/transformer/style/seed1 --wav_scp data/test/wav.scp
    python -m etser.learn.infer --exp <fusion exp> --wav_scp data/test/wav.scp --video_scp data/test/video.scp \
        --text data/test/text

Inputs: audio files (``.wav``, ``.flac``, ...), videos (``.mp4``, ...: their audio track and their frames),
folders of them (every such file under it, sorted), ``--wav_scp`` (``id path`` lines), ``--video_scp`` (videos
by id: the frames of the ``--wav_scp`` input of that id, whose audio stays the wav's) and ``--text``
(transcripts: ``key text`` lines, split at the first tab when the line has one, else at the first space;
the key is an input's id or its file name without extension; with no media given, each transcript is an
input of its own).  Each input's id is its path (the utterance id of a ``--wav_scp``).

Output (stdout and ``--output``): a header line, then one tab-separated line per input, in input order:
``id  pred  p_<class>...  note`` for a classifier (``id  pred  value  note`` for a continuous task),
``id  caption  note`` for a captioner.  An input that cannot be predicted has ``pred`` ``-``, ``nan``
probabilities (an empty caption) and the reason in ``note``; the others are predicted all the same and the
exit status is 1 at the end.  Warnings (near-silent audio, a modality predicted as missing) go in ``note``
beside the prediction.

Every stream of the model is computed as stage 2 computed its training features (etser.extract,
etser.features.extract: resampling, chunking, face crops, batching) from the upstream config that made them:
the exp dir's copy (``upstream.yaml``, ``upstream_<stream>.yaml``) or else the config in the training dump
(``<feats_dir>/<train_set>/upstream.yaml``), refused, named, when absent or when its hash differs from the
one the training recorded; a fitted transform (the text baseline's training transcripts) must hash as it
did then.  Relative paths in a config are taken from the current directory, as in stage 2: run it from the
recipe's working dir.  A modality an input lacks (a wav has no frames; no transcript) is given to a model
trained with ``allow_missing`` as missing (``present`` False, as in training); for any other model it is an
error of that input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
# An input read as one row of a data dir: the file it gives each input table a modality declares it reads
# (``Modality.input_table``); a modality whose values are not files reads the transcript.  The audio table's
# files are decoded here (a video's audio track too) so that near-silent inputs get a note.
AUDIO_TABLE = "wav.scp"
INPUT_FILES = {AUDIO_TABLE: "audio_path", "video.scp": "video_path"}


# ---------------------------------------------------------------- inputs

@dataclasses.dataclass
class Input:
    """One thing to predict: a media file (audio, or video with its audio track) and/or a transcript."""

    id: str
    path: str | None = None       # the media file given: audio, or a video (its audio track and its frames)
    text: str | None = None
    video: str | None = None      # the video of --video_scp: frames (and audio when ``path`` gives none)

    @property
    def audio_path(self) -> str | None:
        return self.path or self.video

    @property
    def video_path(self) -> str | None:
        return self.video or (self.path if is_video(self.path) else None)


def is_video(path: str | None) -> bool:
    return path is not None and Path(path).suffix.lower() in VIDEO_SUFFIXES


def expand_inputs(paths: Sequence[str]) -> dict[str, str]:
    """``{id: path}`` of files and of every audio or video file (by suffix) under the folders given, in order."""
    out: dict[str, str] = {}
    suffixes = AUDIO_SUFFIXES + VIDEO_SUFFIXES
    for p in paths:
        found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and f.suffix.lower() in suffixes) \
            if Path(p).is_dir() else [p]
        if Path(p).is_dir() and not found:
            raise ValueError(f"{p}: a folder without audio or video files ({', '.join(suffixes)})")
        for f in found:
            if f in out:
                raise ValueError(f"{f} given twice")
            out[f] = f
    return out


def read_transcripts(path: Path) -> dict[str, str]:
    """``key text`` lines (split at the first tab when the line has one, else at the first run of spaces); a
    key alone is an empty transcript."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, _, text = line.partition("\t") if "\t" in line else line.strip().partition(" ")
            key = key.strip()
            if key in out:
                raise ValueError(f"{path}:{n}: {key} has a second transcript")
            out[key] = text.strip()
    return out


def gather_inputs(media: dict[str, str], transcripts: dict[str, str] | None, where: str = "--text",
                  videos: dict[str, str] | None = None) -> list[Input]:
    """The inputs: the media files with their videos (``videos``, by id) and transcripts (by id, else by file
    name without extension), or the transcripts alone when no media file is given."""
    inputs = [Input(u, p) for u, p in media.items()]
    by_id = {x.id: x for x in inputs}
    for u, v in (videos or {}).items():
        if u in by_id:
            by_id[u].video = v
        else:
            by_id[u] = Input(u, None, None, v)
            inputs.append(by_id[u])
    if not inputs:
        return [Input(k, None, t) for k, t in (transcripts or {}).items()]
    if transcripts is None:
        return inputs
    by_stem: dict[str, list[Input]] = {}
    for x in inputs:
        by_stem.setdefault(Path(x.audio_path).stem, []).append(x)
    unmatched = []
    for key, text in transcripts.items():
        hits = [by_id[key]] if key in by_id else by_stem.get(key, [])
        if len(hits) > 1:
            raise ValueError(f"{where}: {key} names {len(hits)} inputs ({', '.join(x.id for x in hits)}); key "
                             "these transcripts by path")
        if not hits:
            unmatched.append(key)
            continue
        if hits[0].text is not None:
            raise ValueError(f"{where}: {hits[0].id} has two transcripts")
        hits[0].text = text
    if unmatched:
        raise ValueError(f"{where}: {len(unmatched)} transcript(s) match no input (first: {unmatched[0]}); a key "
                         "is an input's id or its file name without extension")
    return inputs


# ---------------------------------------------------------------- what the model reads, and from which config

def _recorded_meta(exp_dir: Path, stream: dict, n_streams: int, train_set: str) -> dict | None:
    """stage 2's meta.json of the stream's training features, as the exp dir or the dump recorded it."""
    from etser.featset import read_meta

    path = exp_dir / "feats_meta.json"
    if path.is_file():
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta = meta if n_streams == 1 else meta.get("streams", {}).get(stream["name"])
        if meta:
            return meta
    dump = Path(stream["feats_dir"]) / train_set if stream.get("feats_dir") else None
    return read_meta(dump) if dump is not None and (dump / "meta.json").is_file() else None


def stream_config(exp_dir: Path, stream: dict, copy_name: str, train_set: str, n_streams: int = 1) -> dict:
    """The upstream config that made a stream's training features: the exp dir's copy, else the training
    dump's; refused, naming the file, when absent or when its hash or fitted transform differs from the
    training's record."""
    from etser.features.upstream import UpstreamError, config_hash, load_config

    where = f"stream {stream['name']} of {exp_dir}"
    candidates = [exp_dir / copy_name]
    if stream.get("feats_dir"):
        candidates.append(Path(stream["feats_dir"]) / train_set / "upstream.yaml")
    if stream.get("upstream"):
        from etser.features.upstream import CONF_DIR

        candidates.append(Path(CONF_DIR) / f"{stream['upstream']}.yaml")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{where}: the upstream config of its training features is missing: none of "
                                f"{', '.join(map(str, candidates))} exists (retrain on features from stage 2 of "
                                "this recipe, or restore the dump)")
    expected = stream.get("config_hash")
    if not expected:
        raise UpstreamError(f"{where}: the training recorded no config hash of its features, so {path} cannot be "
                            "checked against them; retrain it")
    cfg = load_config(path)
    if config_hash(cfg) != expected:
        raise UpstreamError(f"{path}: config hash {config_hash(cfg)} differs from the training features' "
                            f"{expected} ({where}): the features would not be the ones the model learned from")
    meta = _recorded_meta(exp_dir, stream, n_streams, train_set) or {}
    fit = (meta.get("inputs") or {}).get("fit")
    if fit:
        from etser.features import modality as modalities

        now = modalities.of(cfg).fit_digest(cfg)
        if now != fit:
            raise UpstreamError(f"{path}: the transform this config fits (args of {cfg.get('name')}, e.g. its "
                                f"training transcripts, from {Path.cwd()}) is not the one the training features "
                                f"were made with ({where}); run from the recipe's working dir")
    return cfg


@dataclasses.dataclass
class Model:
    """A loaded exp dir: what it predicts, from which streams, and how its outputs read."""

    exp_dir: Path
    net: object
    streams: list[dict]          # name, modality, kind, layers, dim, cfg
    allow_missing: bool
    task: object | None = None   # classifiers
    decode: dict | None = None   # captioners

    @property
    def columns(self) -> list[str]:
        if self.task is None:
            return ["caption"]
        return ["pred", *(f"p_{c}" for c in self.task.classes)] if self.task.classes else ["pred", "value"]


def _caption_feats_dir(exp_dir: Path) -> str | None:
    """``--feats_dir`` of the exp dir's recorded command line (``cmd``)."""
    cmd = exp_dir / "cmd"
    if not cmd.is_file():
        return None
    argv = shlex.split(cmd.read_text(encoding="utf-8"))
    for i, a in enumerate(argv):
        if a == "--feats_dir" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--feats_dir="):
            return a.split("=", 1)[1]
    return None


def load_model(exp_dir: Path, device: str = "cpu") -> Model:
    """The best model of ``exp_dir`` (classifier head, fusion model or captioner) with its streams' configs."""
    from etser import provenance
    from etser.learn.checkpoint import read_exp_config

    exp_dir = Path(exp_dir)
    conf = read_exp_config(exp_dir)
    train_set = conf.get("train_set", "train")
    if "decoder" in conf:   # a captioner: one stream of frames of the modality the caption kind reads
        from etser.caption.decode import load_trained
        from etser.tasks.caption import CaptionTask

        net, info = load_trained(exp_dir, device)
        record = (provenance.read(exp_dir / provenance.FILE_NAME) or {}).get("features", {}).get(train_set, {})
        mod = CaptionTask.input_modality
        stream = {"name": mod, "modality": mod, "kind": "frames", "layers": list(info["layers"]),
                  "dim": int(info["dim"]), "feats_dir": _caption_feats_dir(exp_dir),
                  "config_hash": record.get("config_hash"), "upstream": conf.get("upstream")}
        stream["cfg"] = stream_config(exp_dir, stream, "upstream.yaml", train_set)
        decode = {**info["conf"]["decode_conf"]}
        return Model(exp_dir, net, [stream], False, decode=decode)
    from etser.learn.checkpoint import load_best
    from etser.tasks import task_from_spec

    net, info = load_best(exp_dir, device)
    task = task_from_spec(info["task_spec"], f"{exp_dir}/best.pt")
    streams = [dict(st) for st in info["streams"]]
    for st in streams:
        name = "upstream.yaml" if len(streams) == 1 else f"upstream_{st['name']}.yaml"
        st["cfg"] = stream_config(exp_dir, st, name, train_set, len(streams))
    return Model(exp_dir, net, streams, bool(info.get("allow_missing")), task=task)


# ---------------------------------------------------------------- features

def video_audio(path: str) -> np.ndarray:
    """The audio track of a video as 16 kHz mono float32 (channels averaged, resampled as etser.audio does)."""
    from etser.features.audio import TARGET_RATE, AudioLoadError, resample

    try:
        import av

        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise AudioLoadError(f"{path}: the video has no audio track")
            stream = c.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")  # planar float32, the stream's own layout and rate
            chunks, rate = [], stream.rate
            for frame in c.decode(stream):
                for f in to_float.resample(frame):
                    chunks.append(f.to_ndarray())
            for f in to_float.resample(None):
                chunks.append(f.to_ndarray())
    except AudioLoadError:
        raise
    except Exception as e:  # PyAV's errors of a missing, corrupt or foreign file
        raise AudioLoadError(f"{path}: cannot read its audio track: {type(e).__name__}: {e}") from None
    if not chunks:
        raise AudioLoadError(f"{path}: the audio track decodes to no samples")
    data = np.concatenate(chunks, axis=1)
    wav = data.mean(axis=0, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise AudioLoadError(f"{path}: the audio track holds non-finite samples")
    return np.ascontiguousarray(resample(wav, rate, TARGET_RATE) if rate != TARGET_RATE else wav, dtype=np.float32)


def rms_dbfs(wav: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def _speech(stream: dict, inputs: list[Input], device: str, silence_dbfs: float, notes: dict, bad: dict,
            absent: dict) -> dict:
    """utt -> (mean (L, D), std (L, D), frames (T, L*D) or None) of the inputs' audio (files or tracks)."""
    from etser.features import extract
    from etser.features.audio import AudioLoadError, load_audio
    from etser.features.upstream import build_upstream

    loaded = []
    for x in inputs:
        path = x.audio_path
        if path is None:
            absent[x.id] = "no audio (a transcript only)"
            continue
        try:
            wav = video_audio(path) if is_video(path) else load_audio(path, None if x.id == path else x.id)
        except AudioLoadError as e:
            bad[x.id] = f"unreadable: {e}"
            continue
        level = rms_dbfs(wav)
        if level < silence_dbfs:
            notes.setdefault(x.id, []).append(
                f"warning: near-silent input (RMS {level:.0f} dBFS < {silence_dbfs:g}): the prediction says little"
                if np.isfinite(level) else "warning: silent input (all zeros): the prediction says nothing")
        loaded.append((x.id, wav))
    if not loaded:
        return {}
    upstream = build_upstream(stream["cfg"], device)
    paths = {x.id: x.audio_path for x in inputs}
    frames = stream["layers"] if stream["kind"] == "frames" else None
    out = {}
    for f in extract.iter_features(upstream, loaded, where=lambda u: f"{u} ({paths[u]})", frame_layers=frames):
        if f.mean.shape[0] <= max(stream["layers"]):
            raise ValueError(f"{paths[f.utt]}: the upstream gave {f.mean.shape[0]} layers, the model was trained "
                             f"on layers {stream['layers']}")
        out[f.utt] = (f.mean, f.std, f.frames)
    return out


def _modal(stream: dict, inputs: list[Input], device: str, bad: dict, absent: dict) -> dict:
    """utt -> (mean, std, frames) of the inputs' transcripts or video frames (stage 2's own reading and encoding, etser.features.extract.encode_table)."""
    from etser.features import modality as modalities
    from etser.features.extract import encode_table
    from etser.features.modality import BadInput

    mod = modalities.of(stream["cfg"])
    text = not mod.files   # the values are the transcripts themselves
    field = INPUT_FILES.get(mod.input_table)
    if not text and field is None:
        raise ValueError(f"stream {stream['name']}: inference takes audio, video files and transcripts; the "
                         f"{mod.name} modality reads {mod.input_table}, which an input does not give")
    table = {}
    for x in inputs:
        value = x.text if text else getattr(x, field)
        if text and not (value or "").strip():
            absent[x.id] = "no transcript" if value is None else "an empty transcript"
        elif not text and value is None:
            what = field.removesuffix("_path")
            absent[x.id] = f"no {what} (an audio file)" if x.path else f"no {what} (a transcript only)"
        else:
            table[x.id] = value
    if not table:
        return {}
    frames = stream["layers"] if stream["kind"] == "frames" else None
    out = {}
    for utt, got in encode_table(stream["cfg"], table, frames, device):
        if isinstance(got, BadInput):
            absent[utt] = got.reason  # what stage 2 excludes from a stream: a missing modality of that input
        else:
            out[utt] = (got.mean, got.std, got.frames)
    return out


def _as_stored(stream: dict, feats: dict, bad: dict) -> None:
    """Features as stage 2 stores them (frames in the config's ``frames.dtype``, read back as float32), so the
    model sees the values it was trained on; non-finite ones make that input fail, as stage 2 refuses them."""
    dtype = np.float16 if (stream["cfg"].get("frames") or {}).get("dtype") == "float16" else np.float32
    for u, (mean, std, frames) in list(feats.items()):
        with np.errstate(over="ignore"):
            frames = None if frames is None else frames.astype(dtype).astype(np.float32)
        if not all(np.isfinite(a).all() for a in (mean, std, frames) if a is not None):
            bad[u] = f"non-finite features: the {stream['name']} upstream gave NaN or infinite values for this input"
            del feats[u]
        else:
            feats[u] = (mean, std, frames)


# ---------------------------------------------------------------- predicting

def predict(model: Model, inputs: list[Input], device: str = "cpu", silence_dbfs: float = -60.0
            ) -> tuple[list[list[str]], dict[str, str]]:
    """One row of output fields (after the id) per input, and ``{id: why}`` of the inputs not predicted."""
    import torch

    from etser.featset import StreamData, iter_batches
    from etser.features import modality as modalities

    notes: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    feats, absent_by = {}, {}
    for st in model.streams:
        bad, absent = {}, {}
        if modalities.of(st["cfg"]).input_table == AUDIO_TABLE:
            feats[st["name"]] = _speech(st, inputs, device, silence_dbfs, notes, bad, absent)
        else:
            feats[st["name"]] = _modal(st, inputs, device, bad, absent)
        _as_stored(st, feats[st["name"]], bad)
        absent_by[st["name"]] = absent
        for u, why in bad.items():
            failed.setdefault(u, why)
    ok = []
    for x in inputs:
        if x.id in failed:
            continue
        missing = {n: a[x.id] for n, a in absent_by.items() if x.id in a}
        if missing and (not model.allow_missing or len(missing) == len(model.streams)):
            what = "; ".join(f"{n}: {why}" for n, why in missing.items())
            failed[x.id] = (f"cannot predict: the model reads {' + '.join(s['name'] for s in model.streams)}, "
                            f"this input lacks {what}"
                            + ("" if model.allow_missing else " (the model was not trained with allow_missing)"))
            continue
        for n, why in missing.items():
            notes.setdefault(x.id, []).append(f"warning: {n} missing ({why}): predicted without it")
        ok.append(x.id)

    outputs: dict[str, list[str]] = {}
    if ok:
        data = {}
        for st in model.streams:
            got, n_layers, dim = feats[st["name"]], len(st["layers"]), int(st["dim"])
            present = torch.tensor([u in got for u in ok], dtype=torch.bool)
            if st["kind"] == "frames":
                seqs = [torch.from_numpy(got[u][2].reshape(got[u][2].shape[0], n_layers, -1).astype(np.float32))
                        if u in got else torch.zeros((1, n_layers, dim)) for u in ok]
                data[st["name"]] = StreamData("frames", ok, present, frames=seqs)
            else:
                zero = np.zeros((n_layers, dim), np.float32)
                mean = np.stack([got[u][0][st["layers"]] if u in got else zero for u in ok])
                std = np.stack([got[u][1][st["layers"]] if u in got else zero for u in ok])
                data[st["name"]] = StreamData("pooled", ok, present, torch.from_numpy(mean), torch.from_numpy(std))
        with torch.no_grad():
            for idx in iter_batches(len(ok), 16):
                utts = [ok[i] for i in idx]
                batch = {n: d.batch(idx, device) for n, d in data.items()}
                if model.task is None:
                    b = batch[model.streams[0]["name"]]
                    torch.manual_seed(0)   # as scoring decodes
                    dc = model.decode
                    hyps = model.net.generate(b["frames"], b["lengths"], int(dc["num_beams"]), int(dc["max_len"]),
                                              float(dc["length_penalty"]))
                    outputs.update((u, [h]) for u, h in zip(utts, hyps))
                    continue
                probs = model.task.posteriors(model.net({"utts": utts, "streams": batch}))
                for u, p in zip(utts, probs):
                    pred = model.task.classes[int(np.argmax(p))] if model.task.classes else f"{float(p[0]):.4f}"
                    outputs[u] = [pred, *(f"{v:.4f}" for v in p)]
    width = len(model.columns)
    rows = []
    for x in inputs:
        note = failed.get(x.id) or "; ".join(notes.get(x.id, []))
        if x.id in outputs:
            rows.append([*outputs[x.id], note])
        elif model.task is None:
            rows.append(["", note])
        else:
            rows.append(["-", *["nan"] * (width - 1), note])
    return rows, failed


def _field(text: str) -> str:
    """One tab-separated field: tabs and line breaks in a path, a caption or a message cannot split the line."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def format_lines(model: Model, inputs: list[Input], rows: list[list[str]]) -> list[str]:
    lines = ["\t".join(["id", *model.columns, "note"])]
    lines += ["\t".join(_field(f) for f in [x.id, *row]) for x, row in zip(inputs, rows)]
    return lines


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.learn.infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", help="audio or video files, or folders of them")
    ap.add_argument("--exp", type=Path, required=True, help="a trained exp dir (best.pt, config.yaml)")
    ap.add_argument("--wav_scp", type=Path, help="Kaldi wav.scp: 'id path' lines (audio or video paths)")
    ap.add_argument("--video_scp", type=Path, help="'id path' lines of videos: their frames for the inputs of "
                    "the same id (audio from --wav_scp, e.g. data/<set>/wav.scp and video.scp), or inputs of their own")
    ap.add_argument("--text", type=Path, help="transcripts: 'key text' lines (tab-separated when a line has a tab); "
                    "key = an input's id or file name without extension")
    ap.add_argument("--output", type=Path, help="also write the lines to this file")
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--silence_dbfs", type=float, default=-60.0,
                    help="audio quieter than this RMS level gets a warning beside its prediction (default -60)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    from etser.features.audio import AudioLoadError
    from etser.datadir import read_table
    from etser.runtime import pick_device
    from etser.features.upstream import UpstreamError

    t0 = time.monotonic()
    try:
        media: dict[str, str] = {}
        if a.wav_scp:
            media.update(read_table(a.wav_scp, allow_empty_value=False))
        for k, w in expand_inputs(a.inputs).items():
            if k in media:
                raise ValueError(f"{w} given twice")
            media[k] = w
        transcripts = read_transcripts(a.text) if a.text else None
        videos = read_table(a.video_scp, allow_empty_value=False) if a.video_scp else None
        inputs = gather_inputs(media, transcripts, str(a.text), videos)
        if not inputs:
            ap.error("give audio or video files, folders, --wav_scp, --video_scp or --text")
        device = pick_device(a.ngpu)
        model = load_model(a.exp, device)
        rows, failed = predict(model, inputs, device, a.silence_dbfs)
    except (ValueError, FileNotFoundError, RuntimeError, UpstreamError, AudioLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lines = format_lines(model, inputs, rows)
    print("\n".join(lines))
    if a.output:
        a.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for x, row in zip(inputs, rows):
        if row[-1]:
            print(f"infer: {x.id}: {row[-1]}", file=sys.stderr)
    print(f"infer: {len(inputs)} input(s), {len(failed)} not predicted, in {time.monotonic() - t0:.1f} s with "
          f"{a.exp}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

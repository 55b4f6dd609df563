"""Write trees in the layout of the extracted EmotionTalk release, for the stage-1 tests and benchmark.

``write_utterance`` writes one utterance (the JSON of each modality plus its WAV), quirks on request;
``build_skeleton_from_meta`` writes the full release from the official label files in
../shared/emotiontalk-meta (real uids, labels, transcripts, sentiment) with tiny audio.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import soundfile as sf

FOLDERS = {"audio": "Audio", "text": "Text", "video": "Video", "multi": "Multimodal"}
MODALITIES = tuple(FOLDERS)


def wav_bytes(seconds: float = 0.02, samplerate: int = 16000, channels: int = 1, fmt: str = "WAV") -> bytes:
    """A short PCM16 WAV (a quiet sine) as bytes; fmt="WAVEX" writes the WAVE_FORMAT_EXTENSIBLE header."""
    t = np.arange(int(round(seconds * samplerate))) / samplerate
    x = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    data = np.repeat(x[:, None], channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, samplerate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


TINY_WAV = wav_bytes()


def media_dir(root: str | os.PathLike, modality: str, kind: str, nested: bool = False) -> Path:
    """root/Audio/json or, extracted one level deeper, root/Audio/Audio/json."""
    folder = FOLDERS[modality]
    return Path(root, folder, folder, kind) if nested else Path(root, folder, kind)


def rel_path(uid: str, ext: str) -> Path:
    """G00009_42_14_024 -> G00009/G00009_42/G00009_42_14/G00009_42_14_024<ext>."""
    g, d, s, _ = uid.split("_")
    return Path(g, f"{g}_{d}", f"{g}_{d}_{s}", uid + ext)


def make_json(modality: str, uid: str, label: str | None, *, content: str = "", sentiment: float | None = 0.0,
              caption: Mapping | None = None, speaker: object = None, path_key: str | None = None) -> dict:
    """A release JSON of one modality with the fields the dataset README lists for it."""
    speaker = uid.split("_")[2] if speaker is None else speaker
    ext = {"audio": ".wav", "text": ".txt", "video": ".mp4", "multi": ".mp4"}[modality]
    obj: dict = {"data": [{"annotator": i, "emotion": label} for i in (1, 2, 3)]}
    if label is not None:
        obj["emotion_result"] = label
    obj["speaker_id"] = speaker
    if modality == "audio":
        obj["paragraphs"] = [{"begin": 0, "end": 20, "text": content}]
        obj["sourceAttr"] = dict(caption) if caption is not None else {
            "speaker": "青年女性", "style": "语速平稳", "emotion": label, "overall": "平静地说"}
    if modality == "multi":
        obj["Continuous label_result"] = sentiment
    obj[path_key or ("file_path" if modality == "audio" else "file_name")] = str(rel_path(uid, ext))
    if modality in ("audio", "text"):
        obj["content"] = content
    return obj


def write_utterance(root: str | os.PathLike, uid: str, labels: str | Mapping[str, str | None] = "neutral", *,
                    content: str = "[over/]你好[/over]，今天天气不错。", sentiment: float | None = -0.4,
                    caption: Mapping | None = None, modalities=MODALITIES, nested: bool = False,
                    bom: bool = False, int_speaker: bool = False, speaker: object = None,
                    path_key: str | None = None, fields: Mapping[str, Mapping] | None = None,
                    raw_json: Mapping[str, bytes] | None = None, wav: bytes | None = TINY_WAV,
                    wav_extra: tuple[str, ...] = (), json_extra: Mapping[str, tuple[str, ...]] | None = None,
                    macos_debris: bool = False) -> dict[str, Path]:
    """Write one utterance; return the written paths by kind ('audio', 'text', ..., 'wav').

    labels: one label for every modality or modality -> label (None: no emotion_result).
    Quirks: nested (Audio/Audio/json), bom (UTF-8 BOM), int_speaker (speaker_id as int), speaker (explicit
    speaker_id), path_key ('file_path' or 'file_name'), fields (modality -> fields to set; value None deletes),
    raw_json (modality -> exact file bytes), wav (None: no audio file), wav_extra / json_extra (more
    top-level folders, relative to root, that get a second copy: a duplicate uid), macos_debris (``._`` files).
    """
    labels = {m: labels for m in modalities} if isinstance(labels, str) or labels is None else dict(labels)
    paths: dict[str, Path] = {}
    sp = uid.split("_")[2]
    spk = speaker if speaker is not None else (int(sp) if int_speaker else sp)
    for m in modalities:
        obj = make_json(m, uid, labels.get(m, "neutral"), content=content, sentiment=sentiment, caption=caption,
                        speaker=spk, path_key=path_key)
        for k, v in ((fields or {}).get(m) or {}).items():
            if v is None:
                obj.pop(k, None)
            else:
                obj[k] = v
        data = (raw_json or {}).get(m)
        if data is None:
            data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")
            if bom:
                data = b"\xef\xbb\xbf" + data
        tops = [media_dir(root, m, "json", nested)] + [Path(root, e) for e in (json_extra or {}).get(m, ())]
        paths[m] = _write_copies(tops, rel_path(uid, ".json"), data, macos_debris)
    if wav is not None:
        tops = [media_dir(root, "audio", "wav", nested)] + [Path(root, e) for e in wav_extra]
        paths["wav"] = _write_copies(tops, rel_path(uid, ".wav"), wav, macos_debris)
    return paths


def _write_copies(tops: list[Path], rel: Path, data: bytes, macos_debris: bool) -> Path:
    """Write data to top/rel under every top (more than one: a duplicate uid); return the first path."""
    for top in tops:
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if macos_debris:
            (p.parent / ("._" + p.name)).write_bytes(b"\x00\x05\x16\x07junk")
    return tops[0] / rel


def read_meta(meta_dir: str | os.PathLike) -> dict[str, dict]:
    """uid -> {'audio': label, 'multi': ..., 'video': ..., 'text': ..., 'content': raw transcript,
    'sentiment': float} from the official label files."""
    meta_dir = Path(meta_dir)
    rows: dict[str, dict] = {}
    for modality, name in (("multi", "mm.csv"), ("audio", "audio.csv"), ("video", "video.csv")):
        with open(meta_dir / name, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                uid = Path(r["file_name"]).stem
                rows.setdefault(uid, {})[modality] = r["emotion"]
    with open(meta_dir / "transcription.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            uid = Path(r["name"]).name
            rows.setdefault(uid, {}).update(text=r["emotion"], content=r["chinese"])
    npz = np.load(meta_dir / "mm_label.npz", allow_pickle=True)
    for split in npz.files:
        for uid, v in npz[split].item().items():
            rows[uid]["sentiment"] = float(v["val"])
    return rows


def build_skeleton_from_meta(meta_dir: str | os.PathLike, out_dir: str | os.PathLike,
                             nested: tuple[str, ...] = ("video",)) -> int:
    """Write the full-size release skeleton under out_dir; return the number of utterances.

    Real uids, per-modality labels, transcripts (with their markup) and continuous sentiment; audio is
    one 0.02 s WAV per utterance (16 kHz mono or 44.1 kHz stereo, alternating), hard-linked from two
    originals so that building stays fast. The quirks of the real release are mixed in: the modalities in
    ``nested`` are extracted one level deeper, speaker ids are integers in the Audio JSON and zero-padded
    strings elsewhere, every 50th JSON starts with a BOM, and the folder has ``._`` debris.
    """
    out_dir = Path(out_dir)
    rows = read_meta(meta_dir)
    originals = []
    for i, (sr, ch) in enumerate(((16000, 1), (44100, 2))):
        p = out_dir / f"._tiny{i}.wav"  # "._" files are ignored by stage 1 like any macOS debris
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(wav_bytes(0.02, sr, ch))
        originals.append(p)
    made_dirs: set[Path] = set()
    for n, (uid, r) in enumerate(sorted(rows.items())):
        sp = uid.split("_")[2]
        rel = rel_path(uid, "")
        for m in MODALITIES:
            obj = make_json(m, uid, r[m], content=r["content"], sentiment=r["sentiment"],
                            speaker=int(sp) if m == "audio" else sp)
            d = media_dir(out_dir, m, "json", m in nested) / rel.parent
            if d not in made_dirs:
                d.mkdir(parents=True, exist_ok=True)
                made_dirs.add(d)
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            (d / (uid + ".json")).write_bytes(b"\xef\xbb\xbf" + data if n % 50 == 0 else data)
        d = media_dir(out_dir, "audio", "wav", "audio" in nested) / rel.parent
        if d not in made_dirs:
            d.mkdir(parents=True, exist_ok=True)
            made_dirs.add(d)
        try:
            os.link(originals[n % 2], d / (uid + ".wav"))
        except OSError:
            (d / (uid + ".wav")).write_bytes(originals[n % 2].read_bytes())
    (media_dir(out_dir, "audio", "json", "audio" in nested) / "._G00001").write_bytes(b"junk")
    return len(rows)

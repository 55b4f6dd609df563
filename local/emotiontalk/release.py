"""EmotionTalk release -> Kaldi data directories ``data/{train,val,test}`` (stage 1).

The release is four extracted tars (Audio, Text, Video, Multimodal). Each modality folder holds ``json/``
(Audio also ``wav/``, Multimodal also ``mp4/``), possibly one level deeper (``Audio/Audio/json``), so the
folders are searched for rather than assumed. Below them the path is
``G{ggggg}/G{ggggg}_{dd}/G{ggggg}_{dd}_{ss}/<uid>.<ext>`` and the file stem is the uid
``G{ggggg}_{dd}_{ss}_{ttt}`` (group, dialogue, global speaker id, turn). Files are matched by uid; the
media path inside the JSON (``file_path`` or ``file_name``) is only quoted in messages, because its root
is the annotation tool's, not ours.

Rules, decided here:

- Utterance id ``S<ss>-<uid>``, speaker ``S<ss>``, with ``<ss>`` taken from the uid (the path). The JSON
  ``speaker_id`` (integer or zero-padded string) must name the same speaker in every modality where it is
  present; otherwise the utterance is excluded ("speaker mismatch", both values in the message). A JSON
  without ``speaker_id`` is accepted (the path is authoritative).
- An utterance is kept only if every modality present in the release has exactly one parsable JSON with a
  known label (a Multimodal sentiment, when present, in [-2, 2]) and its WAV is readable, complete and
  non-empty; so all per-utterance files share one key set, except ``utt2caption_<kind>`` and
  ``utt2sentiment``: a Multimodal JSON without a sentiment keeps its utterance (a warning names it) for every
  task but the sentiment one, which counts it. Anything else is an exclusion, written as
  ``uid<TAB>file<TAB>category: detail`` (one line per problem) to ``data/<set>/excluded``; all of them,
  including files whose name is not a release uid or whose group is not in the official split, also go to
  ``data/excluded``.
- ``text`` is the Text JSON ``content`` (the Audio one where Text is absent) with markup tags removed and
  whitespace collapsed; ``text_raw`` is that content as is, except that line breaks and other control
  characters become spaces and leading/trailing spaces go (a table line cannot hold them).
- Audio is referenced in place (absolute path in ``wav.scp``), never copied or resampled; ``utt2dur``
  comes from the header, checked by a cheap decode (etser.audio_info: truncation in any container, NaN or
  infinity in float files).
- Names: a path that is not valid UTF-8 cannot be written to a Kaldi table, so its utterance is excluded
  ("non-UTF-8 path") and every message shows such names with ``\\xNN`` escapes; a db_root that is not UTF-8
  stops the stage. Symlinks are followed but each folder is searched once (a loop is named in a warning,
  never reported as duplicate uids). Named pipes and devices are never opened.
- Each set is written into a staging folder and renamed into place: complete or absent, never mixed.
- ``video.scp`` names the Multimodal ``mp4`` of each utterance when the
  release has an ``mp4`` folder; then an utterance without its (non-empty) mp4 is excluded.
- Captions: ``utt2caption`` is the Audio JSON ``sourceAttr`` as compact JSON (``{}`` where absent);
  ``utt2caption_<kind>`` (speaker, style, emotion, overall) holds the string of that key, one line, for the
  utterances that have a non-empty one. Keys found, empty captions and values of another shape (counted,
  one example with uid, file and value) are reported; no utterance is excluded for its captions.
- Which parts of the release are present is the first table of ``stats.md``; each missing part is printed
  as a NOTE naming the tasks it rules out.
- Official split by group: val = G00001 + G00012, test = G00003 + G00015, train = the other 11.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from etser.features.audio_info import AudioError, audio_info, not_a_regular_file
from etser.datadir import (RELEASE_RECORD, c_sort_key, printable, staged_dir, utt2spk_to_spk2utt,
                           write_release_record, write_table, write_text_atomic)
from emotiontalk.labels import EMOTIONS_ALL, EMOTIONS_FOUR, LABEL_SOURCES

SETS = ("train", "val", "test")
SPLIT_GROUPS = {"val": (1, 12), "test": (3, 15)}
NUM_GROUPS = 15
# Label source (suffix of utt2emo_<source>) -> the release's folder name.
MODALITY_FOLDERS = {"audio": "Audio", "text": "Text", "video": "Video", "multi": "Multimodal"}
MODALITIES = tuple(sorted(set(LABEL_SOURCES.values())))  # audio, multi, text, video
# Folder names accepted for a modality (lowercased, non-letters dropped), alone or as one word of the name.
_MODALITY_ALIASES = {"audio": "audio", "speech": "audio", "text": "text", "video": "video", "visual": "video",
                     "multimodal": "multi", "multi": "multi"}
SOURCE_TITLES = {"audio": "Speech (utt2emo_audio)", "multi": "Multi (utt2emo_multi)",
                 "text": "Text (utt2emo_text)", "video": "Video (utt2emo_video)"}
# Spellings the dataset README itself uses for the seven labels.
_LABEL_ALIASES = {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "surprise": "surprised",
                  "happiness": "happy", "sadness": "sad"}
SENTIMENT_KEY = "Continuous label_result"
UID_RE = re.compile(r"G(\d{5})_(\d{2})_(\d{2})_(\d{3})")
# Every file stage 1 writes into a set dir (stale ones of an earlier run are removed).
# Caption kinds of the Audio JSON ``sourceAttr``: kind -> the keys accepted for it (the first is the
# mini corpus's; the real release's schema is not published, so any other key is reported, never used).
CAPTION_KINDS = {"speaker": ("speaker",), "style": ("style",), "emotion": ("emotion",), "overall": ("overall",)}
CAPTION_KEY = "sourceAttr"
TABLE_FILES = ("wav.scp", "video.scp", "utt2spk", "spk2utt", "text", "text_raw", "utt2sentiment", "utt2caption",
               "utt2dur") + tuple(f"utt2emo_{m}" for m in MODALITIES) + tuple(
               f"utt2caption_{k}" for k in CAPTION_KINDS)
_SKIP_DIRS = {"__MACOSX", ".git"}
_MAX_SEARCH_DEPTH = 6
_MESSAGES_PER_REASON = 10


class DataPrepError(Exception):
    """The release cannot be prepared at all (no Audio folder, a set with no utterances, --strict)."""


# ---------------------------------------------------------------- transcripts

_TAG_WORDS = r"over|interrupted|laughing|sobbing|crying|screaming"
_TAGS = re.compile(
    # a complete tag of ASCII words: [over/] [/over] [over] [/over/] [Sobbing] ...
    r"\[\s*/?\s*[A-Za-z][A-Za-z ]*?\s*/?\s*\]"
    # a tag word with bracket debris after it: [[/over]  /over]  [over/]]  over]
    rf"|(?<![A-Za-z])[\[\]]*\s*/?\s*(?:{_TAG_WORDS})\s*/?\s*[\[\]]+"
    # a tag word with an opening bracket but no closing one: [over/呀  [over
    rf"|[\[\]]+\s*/?\s*(?:{_TAG_WORDS})\s*/?(?![A-Za-z])",
    re.IGNORECASE)
_FULLWIDTH_BRACKETS = str.maketrans({"【": "[", "】": "]"})
_BRACKETS = re.compile(r"[\[\]]")
_SPACES = re.compile(r"\s+")
# Characters a table line cannot hold (controls, line/paragraph separators, BOM): replaced by spaces.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def clean_transcript(raw: str) -> str:
    """Remove the release's markup tags (well-formed, malformed, full-width), keep the spoken words."""
    text = _UNPRINTABLE.sub(" ", raw).translate(_FULLWIDTH_BRACKETS)
    text = _TAGS.sub("", text)
    text = _BRACKETS.sub("", text)  # what is left of a broken tag is a lone bracket
    return _SPACES.sub(" ", text).strip()


# ---------------------------------------------------------------- finding the release


@dataclass
class Release:
    """Where each modality's folders are: modality -> kind ('json', 'wav', 'mp4') -> folders."""
    root: Path
    folders: dict[str, dict[str, list[Path]]]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if self.folders.get(m, {}).get("json"))


def _modality_of(name: str) -> str | None:
    """'Audio', 'multi-modal', 'EmotionTalk_Video' -> the modality; None when none or ambiguous."""
    words = re.findall(r"[a-z]+", name.lower())
    if "".join(words) in _MODALITY_ALIASES:
        return _MODALITY_ALIASES["".join(words)]
    hits = {_MODALITY_ALIASES[w] for w in words if w in _MODALITY_ALIASES}
    return hits.pop() if len(hits) == 1 else None


def find_release(db_root: str | os.PathLike) -> Release:
    """Search db_root (breadth first, a few levels) for json/wav/mp4 folders inside modality folders.

    Group folders (``G00001``...) and the media folders themselves are not descended into, so the search
    costs a few directory listings however large the release is.
    """
    root = Path(os.path.abspath(db_root))
    if not root.is_dir():
        raise DataPrepError(f"--db_root {printable(root)} is not a directory")
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        raise DataPrepError(f"--db_root {printable(root)} is not valid UTF-8, and the Kaldi tables (wav.scp) "
                            "cannot hold paths below it; rename it or give a symlink with a UTF-8 name") from None
    folders: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    level = [(root, _modality_of(root.name))]
    seen = {_dir_key(root): str(root)}
    for _ in range(_MAX_SEARCH_DEPTH):
        next_level = []
        for d, modality in level:
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                _warn(f"cannot list {printable(d)}: {e.strerror or e}")
                continue
            for e in entries:
                if not e.is_dir() or e.name in _SKIP_DIRS or e.name.startswith("._"):
                    continue
                if not _first_visit(e.path, seen):
                    continue
                kind = e.name.lower()
                if kind in ("json", "wav", "mp4"):
                    if modality is not None:
                        folders[modality][kind].append(Path(e.path))
                    continue
                if re.fullmatch(r"G\d{5}", e.name):
                    continue
                next_level.append((Path(e.path), _modality_of(e.name) or modality))
        level = next_level
    return Release(root, {m: dict(k) for m, k in folders.items()})


def _warn(message: str) -> None:
    tqdm.write(f"WARNING: {message}", file=sys.stderr)


def _dir_key(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _first_visit(path: str, seen: dict[tuple[int, int], str]) -> bool:
    """False (with a warning naming the link) for a folder already searched under another path.

    Symlinks are followed, so a link to an ancestor (a loop) or a second path to one folder would list
    the same files again and again, each time as a duplicate uid.
    """
    try:
        key = _dir_key(path)
    except OSError as e:
        _warn(f"cannot search {printable(path)}: {e.strerror or e}")
        return False
    first = seen.setdefault(key, path)
    if first == path:
        return True
    loop = os.path.commonpath([first, path]) == first
    _warn(f"not searching {printable(path)}: " + (
        f"a symlink loop (it is the folder {printable(first)} again)" if loop else
        f"the folder {printable(first)} again (a symlink), already searched"))
    return False


def index_files(folders: Iterable[Path], suffix: str) -> dict[str, list[str]]:
    """File stem -> every file with that suffix below the folders (macOS ``._*`` files skipped).

    Symlinks are followed, but each folder is searched once (a loop or a second path to it is named in a
    warning and skipped); a folder that cannot be listed is named too. Paths are plain strings: pathlib
    objects for ~100,000 files cost seconds.
    """
    found: dict[str, list[str]] = defaultdict(list)
    seen: dict[tuple[int, int], str] = {}
    for top in folders:
        if not _first_visit(str(top), seen):
            continue
        for dirpath, dirnames, filenames in os.walk(
                top, followlinks=True, onerror=lambda e: _warn(f"cannot list {printable(e.filename)}: {e.strerror}")):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                                 and _first_visit(os.path.join(dirpath, d), seen))
            for name in filenames:
                if name.startswith("._") or not name.lower().endswith(suffix):
                    continue
                found[name[:-len(suffix)]].append(os.path.join(dirpath, name))
    return found


def video_folders(release: Release) -> list[Path]:
    """The release's ``mp4`` folders (Multimodal/mp4; a Video/mp4 is accepted too)."""
    return [f for m in ("multi", "video") for f in release.folders.get(m, {}).get("mp4", [])]


# What each part of the release gives, and the tasks that cannot run without it.
MODALITY_PARTS = (
    # (key in modalities.json, name, what stage 1 writes from it, what is ruled out without it)
    ("wav", "audio wav (Audio/wav)", "wav.scp, utt2dur", "everything (stage 1 stops)"),
    ("mp4", "video mp4 (Multimodal/mp4)", "video.scp",
     "visual features (stage 2 visual upstreams), so no Visual table and no audio-visual fusion"),
    ("text", "text (Text/json content)", "text, text_raw",
     "text from the Text JSON (the Audio JSON content is used instead, if any)"),
    ("label_audio", "Speech label (Audio/json)", "utt2emo_audio", "speech_four, speech_all"),
    ("label_text", "Text label (Text/json)", "utt2emo_text", "text_four, text_all"),
    ("label_video", "Video label (Video/json)", "utt2emo_video", "video_four, video_all"),
    ("label_multi", "Multi label (Multimodal/json)", "utt2emo_multi",
     "multi_four, multi_all (the Multi columns of every table)"),
    ("sentiment", "sentiment (Multimodal/json Continuous label_result)", "utt2sentiment", "sentiment analysis"),
    ("captions", "captions (Audio/json sourceAttr)", "utt2caption_<kind>", "speaker-style captioning"),
)


def modality_presence(release: Release, sets: dict[str, list[Utterance]]) -> dict[str, bool]:
    """Part key (MODALITY_PARTS) -> whether the release has it for the kept utterances."""
    mods = release.modalities
    utts = [u for us in sets.values() for u in us]
    return {"wav": bool(release.folders.get("audio", {}).get("wav")), "mp4": bool(video_folders(release)),
            "text": "text" in mods, "label_audio": "audio" in mods, "label_text": "text" in mods,
            "label_video": "video" in mods, "label_multi": "multi" in mods, "sentiment": "multi" in mods,
            "captions": any(u.captions for u in utts)}


def ruled_out(presence: dict[str, bool]) -> list[str]:
    """One line per missing part: what it rules out."""
    return [f"no {name}: no {what}" for key, name, _, what in MODALITY_PARTS if not presence[key]]


def split_of(group: int) -> str | None:
    if not 1 <= group <= NUM_GROUPS:
        return None
    for name, groups in SPLIT_GROUPS.items():
        if group in groups:
            return name
    return "train"


def groups_of(split: str) -> list[int]:
    return [g for g in range(1, NUM_GROUPS + 1) if split_of(g) == split]


# ---------------------------------------------------------------- one utterance


@dataclass
class Exclusion:
    uid: str
    file: str
    reason: str   # short category, e.g. "bad JSON"
    detail: str

    def line(self) -> str:
        return f"{self.uid}\t{self.file}\t{self.reason}: {self.detail}"


@dataclass
class Utterance:
    uid: str
    split: str
    speaker: str
    wav: str = ""
    text: str = ""
    text_raw: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    sentiment: float | None = None
    caption: str = "{}"
    duration: float = 0.0
    video: str = ""
    captions: dict[str, str] = field(default_factory=dict)   # kind -> caption (only the kinds present)

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}-{self.uid}"


def read_json(path: str | os.PathLike) -> dict:
    """Parse one release JSON (BOM tolerated); ValueError saying what is wrong.

    A path that is not a regular file (a named pipe, a device) is never opened: reading it would block or
    never end. A string holding a lone surrogate (``"\\ud800"`` parses, but is no character and cannot be
    written as UTF-8) makes the file unusable.
    """
    what = not_a_regular_file(path)
    if what:
        raise ValueError(f"is {what}, not a file (not opened)")
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"does not parse: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"top level is a {type(obj).__name__}, not an object")
    bad = _lone_surrogate(obj)
    if bad:
        raise ValueError(f"holds a lone surrogate {bad}, which is not a character (UTF-8 cannot hold it)")
    return obj


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(obj: object, where: str = "") -> str | None:
    """'\\ud800 in content' for the first lone surrogate in a parsed JSON value's strings, else None."""
    if isinstance(obj, str):
        m = _SURROGATE.search(obj)
        return f"\\u{ord(m.group()):04x} in {where or 'a string'}" if m else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        name = f"{where}.{k}" if where else str(k)
        found = _lone_surrogate(k, f"a key of {where or 'the object'}") if isinstance(k, str) else None
        found = found or _lone_surrogate(v, name)
        if found:
            return found
    return None


def parse_label(value: object) -> str:
    """'Happy ' -> 'happy'; ValueError for anything not one of the seven labels."""
    if not isinstance(value, str):
        raise ValueError(f"emotion_result {value!r} is not one of {', '.join(EMOTIONS_ALL)}")
    label = value.strip().lower()
    label = _LABEL_ALIASES.get(label, label)
    if label not in EMOTIONS_ALL:
        raise ValueError(f"emotion_result {value!r} is not one of {', '.join(EMOTIONS_ALL)}")
    return label


def parse_speaker(value: object) -> int | None:
    """7, '07', '7' -> 7; None for anything that is not a speaker number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _one_line(s: str) -> str:
    return _UNPRINTABLE.sub(" ", s.replace("\r\n", " "))


class _Collector:
    """Exclusions with console messages, a few per reason, the rest counted."""

    def __init__(self, echo: bool):
        self.items: list[tuple[str | None, Exclusion]] = []
        self.shown = Counter()
        self.echo = echo

    def add(self, split: str | None, uid: str, file: Path | str, reason: str, detail: str) -> None:
        # A name that is not UTF-8 (surrogate escapes) is written as \xNN: the lists are UTF-8 text.
        uid, file, detail = printable(uid), printable(file), printable(detail)
        exc = Exclusion(uid, file, reason, detail)
        self.items.append((split, exc))
        self.shown[reason] += 1
        if self.echo and self.shown[reason] <= _MESSAGES_PER_REASON:
            tqdm.write(f"WARNING: excluding {uid}: {reason}: {detail} ({file})", file=sys.stderr)

    def keep_without(self, uid: str, file: Path | str, what: str, detail: str) -> None:
        """An utterance kept but without one label: only the tasks that need that label leave it out."""
        self.shown[what] += 1
        if self.echo and self.shown[what] <= _MESSAGES_PER_REASON:
            tqdm.write(f"WARNING: keeping {printable(uid)} without {what}: {printable(detail)}; only the tasks "
                       f"that need it leave it out ({printable(file)})", file=sys.stderr)


def _check_json(uid: str, split: str, ss: int, modality: str, paths: list[str] | None, folders: list[Path],
                out: _Collector) -> dict | None:
    """The modality's JSON of one utterance, or None after recording why it is unusable."""
    folder = MODALITY_FOLDERS[modality]
    if not paths:
        out.add(split, uid, _expected_path(folders, uid, ".json"), "missing JSON",
                f"no {folder} JSON for this utterance")
        return None
    if len(paths) > 1:
        out.add(split, uid, paths[0], "duplicate uid",
                f"{folder} JSON found {len(paths)} times: " + ", ".join(map(str, paths)))
        return None
    path = paths[0]
    try:
        obj = read_json(path)
    except OSError as e:
        out.add(split, uid, path, "bad JSON", f"{folder} JSON cannot be read: {e.strerror or e}")
        return None
    except ValueError as e:
        out.add(split, uid, path, "bad JSON", f"{folder} JSON {e}")
        return None
    ok = True
    label = obj.get("emotion_result")
    if label is None or (isinstance(label, str) and not label.strip()):
        out.add(split, uid, path, "no label", f"{folder} JSON has no emotion_result")
        ok = False
    else:
        try:
            obj["emotion_result"] = parse_label(label)
        except ValueError as e:
            out.add(split, uid, path, "unknown label", f"{folder} JSON {e}")
            ok = False
    if "speaker_id" in obj and obj["speaker_id"] is not None:
        spk = parse_speaker(obj["speaker_id"])
        if spk != ss:
            out.add(split, uid, path, "speaker mismatch",
                    f"the path says speaker {ss:02d}, the {folder} JSON speaker_id says {obj['speaker_id']!r}")
            ok = False
    if modality == "multi":
        value = obj.get(SENTIMENT_KEY)
        if value is None:  # its emotion labels still serve every other task: left out of utt2sentiment only
            out.keep_without(uid, path, "a sentiment", f"{folder} JSON has no {SENTIMENT_KEY!r}")
        else:
            try:
                sentiment = float(value)
                if not -2.0 <= sentiment <= 2.0:
                    raise ValueError
                obj[SENTIMENT_KEY] = sentiment
            except (TypeError, ValueError):
                out.add(split, uid, path, "bad sentiment",
                        f"{folder} JSON {SENTIMENT_KEY!r} is {value!r}, not a number in [-2, 2]")
                ok = False
    return obj if ok else None


def _media_path(obj: dict | None) -> str:
    if not obj:
        return ""
    value = obj.get("file_path", obj.get("file_name"))
    return f" (its JSON names {value!r})" if value else ""


# ---------------------------------------------------------------- the stage


@dataclass
class PrepResult:
    release: Release
    sets: dict[str, list[Utterance]]
    exclusions: list[tuple[str | None, Exclusion]]
    stats: str
    seconds: float
    found: int

    def excluded_uids(self) -> set[str]:
        return {e.uid for _, e in self.exclusions}


def _expected_path(folders: list[Path], uid: str, ext: str) -> Path:
    g, d, s, _ = UID_RE.fullmatch(uid).groups()
    base = folders[0] if folders else Path(".")
    return base / f"G{g}" / f"G{g}_{d}" / f"G{g}_{d}_{s}" / f"{uid}{ext}"


@dataclass
class CaptionStats:
    """What the Audio JSON ``sourceAttr`` held, over the kept utterances."""
    keys: Counter = field(default_factory=Counter)          # every key found -> utterances
    absent: int = 0                                         # no sourceAttr at all
    empty: Counter = field(default_factory=Counter)         # kind -> empty caption
    unknown_shape: Counter = field(default_factory=Counter)  # 'sourceAttr' or kind -> value of another shape
    examples: dict[str, str] = field(default_factory=dict)  # problem -> 'uid file: value'


def _example(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_captions(obj: dict, uid: str, path: str, stats: CaptionStats, echo: bool) -> dict[str, str]:
    """kind -> caption from the Audio JSON ``sourceAttr``; anything unexpected counted with an example."""
    def problem(what: str, key: str, value: object) -> None:
        stats.unknown_shape[key] += 1
        if key not in stats.examples:
            stats.examples[key] = f"{uid} {path}: {_example(value)}"
            if echo:
                tqdm.write(f"WARNING: {uid}: {what} ({path}): {_example(value)}; no caption taken from it",
                           file=sys.stderr)

    value = obj.get(CAPTION_KEY)
    if value is None:
        stats.absent += 1
        return {}
    if not isinstance(value, dict):
        problem(f"{CAPTION_KEY} is a {type(value).__name__}, not an object of captions", CAPTION_KEY, value)
        return {}
    stats.keys.update(value.keys())
    out = {}
    for kind, keys in CAPTION_KINDS.items():
        key = next((k for k in keys if k in value), None)
        if key is None:
            continue
        caption = value[key]
        if not isinstance(caption, str):
            problem(f"{CAPTION_KEY}[{key!r}] is a {type(caption).__name__}, not a string", kind, caption)
            continue
        caption = _SPACES.sub(" ", _one_line(caption)).strip()
        if not caption:
            stats.empty[kind] += 1
            continue
        out[kind] = caption
    return out


def collect(release: Release, sets: Iterable[str] = SETS, progress: bool = True,
            echo: bool = True) -> tuple[dict[str, list[Utterance]], _Collector, int]:
    """Read every JSON and audio header of the requested sets; kept utterances and exclusions."""
    sets = tuple(sets)
    modalities = release.modalities
    if "audio" not in modalities or not release.folders["audio"].get("wav"):
        seen = {m: sorted(k) for m, k in release.folders.items()}
        raise DataPrepError(
            f"no Audio/json and Audio/wav folders found under {release.root} (found: {seen or 'nothing'}); "
            "--db_root must be the folder where the Audio, Text, Video and Multimodal tars were extracted")
    json_index = {m: index_files(release.folders[m]["json"], ".json") for m in modalities}
    wav_index = index_files(release.folders["audio"]["wav"], ".wav")
    mp4_folders = video_folders(release)
    mp4_index = index_files(mp4_folders, ".mp4") if mp4_folders else None
    uids = set(wav_index).union(*json_index.values())
    out = _Collector(echo)
    out.captions = CaptionStats()
    kept: dict[str, list[Utterance]] = {s: [] for s in sets}
    for uid in tqdm(sorted(uids), desc="stage 1: reading JSON and audio headers", unit="utt", file=sys.stderr,
                    mininterval=1.0, disable=None if progress else True):  # None: no bar in a log
        m = UID_RE.fullmatch(uid)
        split = split_of(int(m.group(1))) if m else None
        if split is None:  # belongs to no set: reported in <out>/excluded only
            some_file = (wav_index.get(uid) or [p for mod in modalities for p in json_index[mod].get(uid, [])])[0]
            if not m:
                out.add(None, uid, some_file, "bad file name", "not a release uid G<ggggg>_<dd>_<ss>_<ttt>")
            else:
                out.add(None, uid, some_file, "unknown group",
                        f"group G{m.group(1)} is not one of the official split's G00001-G{NUM_GROUPS:05d}")
            continue
        ss = int(m.group(3))
        if split not in kept:
            continue
        objs = {mod: _check_json(uid, split, ss, mod, json_index[mod].get(uid), release.folders[mod]["json"], out)
                for mod in modalities}
        wavs = wav_index.get(uid)
        if not wavs:
            out.add(split, uid, _expected_path(release.folders["audio"]["wav"], uid, ".wav"), "missing audio",
                    "no WAV for this utterance" + _media_path(objs.get("audio")))
            continue
        if len(wavs) > 1:
            out.add(split, uid, wavs[0], "duplicate uid",
                    f"WAV found {len(wavs)} times: " + ", ".join(map(str, wavs)))
            continue
        try:
            info = audio_info(wavs[0])
        except AudioError as e:
            out.add(split, uid, wavs[0], e.kind, str(e))
            continue
        video = ""
        if mp4_index is not None:
            mp4s = mp4_index.get(uid)
            if not mp4s:
                out.add(split, uid, _expected_path(mp4_folders, uid, ".mp4"), "missing video",
                        "no Multimodal mp4 for this utterance, while the release has videos"
                        + _media_path(objs.get("multi")))
                continue
            if len(mp4s) > 1:
                out.add(split, uid, mp4s[0], "duplicate uid",
                        f"mp4 found {len(mp4s)} times: " + ", ".join(map(str, mp4s)))
                continue
            try:
                what = not_a_regular_file(mp4s[0])  # a pipe or device is never opened; its size says nothing
                size = os.path.getsize(mp4s[0])
            except OSError as e:
                out.add(split, uid, mp4s[0], "unreadable video", f"mp4 cannot be read: {e}")
                continue
            if what:
                out.add(split, uid, mp4s[0], "not a file", f"the path is {what}, not a video file (not opened)")
                continue
            if size == 0:
                out.add(split, uid, mp4s[0], "empty video", "mp4 file is empty (0 bytes)")
                continue
            video = mp4s[0]
        if any(o is None for o in objs.values()):
            continue
        raw = next((objs[mod]["content"] for mod in ("text", "audio")
                    if mod in objs and isinstance(objs[mod].get("content"), str)), "")
        raw = _one_line(raw).strip()
        caption = objs["audio"].get("sourceAttr")
        utt = Utterance(
            uid=uid, split=split, speaker=f"S{ss:02d}", wav=str(wavs[0]),
            text=clean_transcript(raw), text_raw=raw,
            labels={mod: o["emotion_result"] for mod, o in objs.items()},
            sentiment=objs["multi"].get(SENTIMENT_KEY) if "multi" in objs else None,
            caption=_UNPRINTABLE.sub(lambda c: f"\\u{ord(c.group()):04x}", json.dumps(
                caption if caption is not None else {}, ensure_ascii=False, separators=(",", ":"))),
            duration=info.duration, video=video,
            captions=parse_captions(objs["audio"], uid, json_index["audio"][uid][0], out.captions, echo))
        kept[split].append(utt)
    return kept, out, len(uids)


def write_set(set_dir: Path, utts: list[Utterance], modalities: Iterable[str], video: bool = False) -> None:
    """Write one Kaldi data dir (every table sorted under LC_ALL=C).

    The per-utterance tables have identical key sets; ``utt2caption_<kind>`` hold only the utterances with a
    caption of that kind.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "wav.scp": {u.utt_id: u.wav for u in utts},
        "utt2spk": {u.utt_id: u.speaker for u in utts},
        "text": {u.utt_id: u.text for u in utts},
        "text_raw": {u.utt_id: u.text_raw for u in utts},
        "utt2caption": {u.utt_id: u.caption for u in utts},
        "utt2dur": {u.utt_id: str(round(u.duration, 6)) for u in utts},
    }
    for m in modalities:
        written[f"utt2emo_{m}"] = {u.utt_id: u.labels[m] for u in utts}
    if "multi" in modalities:
        written["utt2sentiment"] = {u.utt_id: f"{u.sentiment:g}" for u in utts if u.sentiment is not None}
    if video:
        written["video.scp"] = {u.utt_id: u.video for u in utts}
    for kind in CAPTION_KINDS:
        table = {u.utt_id: u.captions[kind] for u in utts if kind in u.captions}
        if table:
            written[f"utt2caption_{kind}"] = table
    written["spk2utt"] = {s: " ".join(us) for s, us in utt2spk_to_spk2utt(written["utt2spk"]).items()}
    for name, table in written.items():
        write_table(set_dir / name, table)
    for name in TABLE_FILES:
        if name not in written and (set_dir / name).exists():
            (set_dir / name).unlink()


def write_excluded(path: Path, items: Iterable[Exclusion]) -> None:
    lines = sorted((e.line() for e in items), key=c_sort_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(line.replace("\n", " ") + "\n" for line in lines))


# ---------------------------------------------------------------- statistics


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _group_names(split: str) -> str:
    return " ".join(f"G{g:05d}" for g in groups_of(split))


def shared_speakers(sets: dict[str, list[Utterance]]) -> list[tuple[str, str, list[str]]]:
    """(set a, set b, speakers in both) for every pair of sets that share speakers."""
    spk = {s: {u.speaker for u in utts} for s, utts in sets.items()}
    names = list(sets)
    return [(a, b, sorted(spk[a] & spk[b])) for i, a in enumerate(names) for b in names[i + 1:]
            if spk[a] & spk[b]]


def _caption_section(sets: dict[str, list[Utterance]], captions: CaptionStats) -> list[str]:
    total = sum(len(u) for u in sets.values())
    out = ["## Captions (Audio JSON `sourceAttr`)", ""]
    known = {k for keys in CAPTION_KINDS.values() for k in keys}
    found = ", ".join(f"`{k}` ({n})" + ("" if k in known else " not used")
                      for k, n in sorted(captions.keys.items())) or "none"
    out += [f"Keys found (utterances): {found}. Without `sourceAttr`: {captions.absent} of {total}.", ""]
    rows = [[f"utt2caption_{kind}"] + [sum(kind in u.captions for u in us) for us in sets.values()]
            + [captions.empty[kind], captions.unknown_shape[kind]] for kind in CAPTION_KINDS]
    out += [_md_table(["file"] + list(sets) + ["empty (left out)", "not a string (left out)"], rows), ""]
    if captions.unknown_shape[CAPTION_KEY]:
        out += [f"`sourceAttr` not an object in {captions.unknown_shape[CAPTION_KEY]} utterance(s).", ""]
    for what, example in sorted(captions.examples.items()):
        out += [f"Example of an unexpected `{what}`: {example}", ""]
    out += ["Each `utt2caption_<kind>` holds only the utterances with a non-empty caption of that kind; "
            "`utt2caption` keeps the raw `sourceAttr` JSON of every utterance.", ""]
    return out


def format_stats(release: Release, sets: dict[str, list[Utterance]],
                 exclusions: list[tuple[str | None, Exclusion]], captions: CaptionStats | None = None) -> str:
    modalities = release.modalities
    excluded_uids = defaultdict(set)
    for split, e in exclusions:
        excluded_uids[split].add(e.uid)
    found = ", ".join(f"{MODALITY_FOLDERS[m]} ({', '.join(sorted(release.folders[m]))})" for m in modalities)
    out = ["# EmotionTalk data preparation (stage 1)", "",
           f"Release: `{release.root}`; modality folders found: {found}.", "",
           "Speaker `S<ss>` comes from the file name `G<ggggg>_<dd>_<ss>_<ttt>`; a JSON `speaker_id` that names "
           "another speaker excludes the utterance. Audio is referenced in place at its own rate and channels "
           "(resampled when read, in stage 2).", "",
           "## Modalities", ""]
    presence = modality_presence(release, sets)
    out += [_md_table(["part of the release", "found", "stage 1 writes", "without it: no"],
                      [[name, "yes" if presence[key] else "**no**", f"`{files}`", what]
                       for key, name, files, what in MODALITY_PARTS]), ""]
    lost = ruled_out(presence)
    out += (["Ruled out by this release: " + "; ".join(lost) + ".", ""] if lost
            else ["Every modality is present: no task is ruled out.", ""])
    if captions is not None:
        out += _caption_section(sets, captions)
    out += ["## Splits", ""]
    rows = []
    for s, utts in sets.items():
        speakers = sorted({u.speaker for u in utts})
        rows.append([s, _group_names(s), len(utts), f"{sum(u.duration for u in utts) / 3600:.2f}",
                     len(speakers), " ".join(speakers), len(excluded_uids[s])])
    total = sum(len(u) for u in sets.values())
    rows.append(["total", "", total, f"{sum(u.duration for us in sets.values() for u in us) / 3600:.2f}",
                 len({u.speaker for us in sets.values() for u in us}), "",
                 len({e.uid for _, e in exclusions})])
    out += [_md_table(["set", "groups", "utterances", "hours", "speakers", "speaker ids", "excluded"], rows), ""]
    shared = shared_speakers(sets)
    if shared:
        out += ["Speakers shared between sets: " + "; ".join(
            f"{a} and {b} share {', '.join(spk)}" for a, b, spk in shared) + ".", ""]
    else:
        out += ["No speaker is shared between sets.", ""]

    classes = sorted(EMOTIONS_ALL)  # alphabetical, as in the dataset README's table
    out += ["## Utterances per class", ""]
    for m in modalities:
        rows = []
        for s, utts in sets.items():
            c = Counter(u.labels[m] for u in utts)
            rows.append([s] + [c[k] for k in classes] + [len(utts)])
        out += [f"### {SOURCE_TITLES[m]}", "", _md_table(["set"] + [k.capitalize() for k in classes] + ["Total"],
                                                           rows), ""]
    out += [f"## Four-class subset ({', '.join(EMOTIONS_FOUR)})", ""]
    rows = [[SOURCE_TITLES[m]] + [sum(u.labels[m] in EMOTIONS_FOUR for u in utts) for utts in sets.values()]
            for m in modalities]
    out += [_md_table(["label source"] + list(sets), rows), ""]
    if "multi" in modalities:
        out += ["## Continuous sentiment (utt2sentiment)", ""]
        rows = []
        for s, utts in sets.items():
            v = [u.sentiment for u in utts if u.sentiment is not None]
            rows.append([s, f"{sum(v) / len(v):.3f}" if v else "-", min(v, default="-"), max(v, default="-"),
                         len(utts) - len(v)])
        out += [_md_table(["set", "mean", "min", "max", "without"], rows), ""]
    out += ["## Excluded utterances", ""]
    if exclusions:
        rows = [[r, len(u)] for r, u in sorted(_uids_by_reason(exclusions).items())]
        out += [_md_table(["reason", "utterances"], rows), "",
                "Details: `data/<set>/excluded` and `data/excluded` (uid, file, reason)."]
    else:
        out += ["None."]
    return "\n".join(out) + "\n"


def _uids_by_reason(exclusions: list[tuple[str | None, Exclusion]]) -> dict[str, set[str]]:
    by_reason = defaultdict(set)
    for _, e in exclusions:
        by_reason[e.reason].add(e.uid)
    return by_reason


def exclusion_summary(exclusions: list[tuple[str | None, Exclusion]]) -> str:
    n = len({e.uid for _, e in exclusions})
    parts = ", ".join(f"{r}: {len(u)}" for r, u in sorted(_uids_by_reason(exclusions).items()))
    return f"{n} utterance(s) excluded ({parts})"


def prepare(db_root: str | os.PathLike, out_dir: str | os.PathLike, sets: Iterable[str] = SETS,
            strict: bool = False, progress: bool = True, echo: bool = True) -> PrepResult:
    """Stage 1: write ``out_dir/<set>/`` for each set, ``out_dir/excluded`` and ``out_dir/stats.md``.

    Raises DataPrepError when nothing usable is found, when a set ends up empty, or (strict) when any
    utterance is excluded; the exclusion lists are written in every case.
    """
    start = time.perf_counter()
    sets = tuple(sets)
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        raise DataPrepError(f"unknown set(s) {unknown}; choose from {', '.join(SETS)}")
    out_dir = Path(out_dir)
    release = find_release(db_root)
    kept, collector, found = collect(release, sets, progress=progress, echo=echo)
    exclusions = collector.items
    if echo:
        for reason, n in sorted(collector.shown.items()):
            if n > _MESSAGES_PER_REASON:
                print(f"WARNING: ... and {n - _MESSAGES_PER_REASON} more '{reason}' problems, all listed in "
                      f"{out_dir / 'excluded'}", file=sys.stderr)
    write_excluded(out_dir / "excluded", (e for _, e in exclusions))
    for s in sets:
        write_excluded(out_dir / s / "excluded", (e for split, e in exclusions if split == s))
    problems = []
    if strict and exclusions:
        problems.append(f"--strict true: {exclusion_summary(exclusions)}")
    empty = [s for s in sets if not kept[s]]
    if empty:
        problems += [f"no usable utterance for set {s} (groups {_group_names(s)}) under {release.root}"
                     for s in empty]
    if problems:
        # Leave no data dir that looks complete when the stage fails.
        _remove_tables(out_dir, sets)
        if exclusions:
            problems.append(f"see {out_dir / 'excluded'}")
        raise DataPrepError("; ".join(problems))
    has_video = bool(video_folders(release))
    try:  # each set is written whole into a staging folder, then renamed into place
        for s in sets:
            with staged_dir(out_dir / s) as staged:
                write_set(staged, kept[s], release.modalities, video=has_video)
                write_excluded(staged / "excluded", (e for split, e in exclusions if split == s))
        stats = format_stats(release, kept, exclusions, collector.captions)
        write_text_atomic(out_dir / "stats.md", stats)
        presence = modality_presence(release, kept)
        write_release_record(out_dir, presence, ruled_out(presence),
                             {s: [p.name for p in (out_dir / s).iterdir() if p.name in TABLE_FILES] for s in sets})
    except OSError as e:  # a full disk: no set of this run may be mixed with an older one
        _remove_tables(out_dir, sets)
        raise DataPrepError(f"cannot write {printable(e.filename or out_dir)}: {e.strerror or e}; no data dir "
                            "was left half written (the sets and stats.md were removed): free space and rerun "
                            "stage 1") from None
    if echo:
        for line in ruled_out(presence):
            print(f"NOTE: stage 1: {line}", file=sys.stderr)
    return PrepResult(release, kept, exclusions, stats, time.perf_counter() - start, found)


def _remove_tables(out_dir: Path, sets: Iterable[str]) -> None:
    """Leave no data dir that looks complete when the stage fails (the exclusion lists stay)."""
    for s in sets:
        for name in TABLE_FILES:
            (out_dir / s / name).unlink(missing_ok=True)
    (out_dir / "stats.md").unlink(missing_ok=True)
    (out_dir / RELEASE_RECORD).unlink(missing_ok=True)


def figures_line(result: PrepResult) -> str:
    n = sum(len(u) for u in result.sets.values())
    excluded = len(result.excluded_uids())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (f"stage 1: {result.found} utterances found, {n} kept, {excluded} excluded; "
            f"{result.seconds:.1f} s, {n / max(result.seconds, 1e-9):.0f} utt/s, peak RSS {peak_mb:.0f} MB")

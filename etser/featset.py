"""The feature-set reader: stage-2 dumps as model inputs, in ONE batch format for training, scoring,
inference and the tests.

A feature set dir is ``dump/<tag>/<set>/`` as stage 2 writes it:

* ``meta.json`` — ``upstream``, ``config_hash``, ``num_layers`` L, ``dim`` D, ``frame_layers`` (or null),
  ``modality`` (``speech`` | ``text`` | ``visual``; ``speech`` when absent) and ``schema_version``
  (1 when absent), ...;
* ``pooled_mean.scp`` / ``pooled_std.scp`` — utt -> (L, D) time-mean / population time-std of every layer;
* optional ``frames.scp`` — utt -> (T, len(frame_layers)·D), and ``utt2num_frames``.

A **stream** is one such dump read a certain way: ``Stream(name, feats_dir, layers, kind)`` with ``kind``
``pooled`` or ``frames``; its name (default: the modality) is its key in the batch.  A batch is::

    {"utts":    [B utterance ids],
     "streams": {name: {"mean": (B, L, D), "std": (B, L, D),           # kind pooled
                        # or "frames": (B, T, L, D) zero-padded, "lengths": (B,) long   # kind frames
                        "present": (B,) bool}},  # False: the utterance has no features of this modality
     "target":  (B,) long class ids (classification) or float (continuous targets); absent at inference}

L is the number of layers the head selected, in the order given.  An utterance without features is an
error unless the stream is read with ``allow_missing=True``; then its inputs are zeros (one zero frame)
and ``present`` is False.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from etser import provenance
from etser.datadir import read_table

# 2: meta.json records the modality (speech, text, visual) and the time axis; 1: speech only
SCHEMA_VERSION = 2
MODALITIES = ("speech", "text", "visual")
KINDS = ("pooled", "frames")
META_REQUIRED = ("upstream", "config_hash", "num_layers", "dim")
META_DEFAULTS = {"modality": "speech", "schema_version": 1, "frame_layers": None}


# ---------------------------------------------------------------- meta.json

def _modalities() -> list[str]:
    """The modalities stage 2 knows (each registers itself from its own file in etser/features/modalities/)."""
    from etser.features.modality import names

    return names()


def read_meta(set_dir: Path) -> dict:
    """``meta.json`` of a feature set dir, with ``modality`` / ``schema_version`` defaults filled in."""
    path = Path(set_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stage 2 (feature extraction) for this set first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); rerun stage 2 for this set") from None
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(missing)}; rerun stage 2 for this set")
    meta = {**META_DEFAULTS, **meta}
    if meta["modality"] not in _modalities():
        raise ValueError(f"{path}: modality {meta['modality']!r} is not one of {', '.join(_modalities())}")
    if int(meta["schema_version"]) > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {meta['schema_version']} is newer than this reader's "
                         f"{SCHEMA_VERSION}: update the recipe")
    return meta


def features_record(set_dir: Path) -> dict:
    """A feature set's identity as stage 2 recorded it (its config and what it was made from)."""
    meta = read_meta(set_dir)
    return {"config_hash": meta.get("config_hash"), "inputs": meta.get("inputs")}


def training_identity(chash: str, task, data_dir: Path, sets: Sequence[str], streams: Sequence[Mapping]) -> dict:
    """What a training is made from: the training config, the label file of every set it reads (content) and
    every stream's features of those sets (stage 2's record): a label corrected, features re-extracted from
    changed audio or a config edited changes it.  Recorded by the trainer, compared again by stage 5."""
    return {
        "config": chash,
        # a missing label file: the task's own read names it with what to do
        "labels": {s: provenance.content_identity(Path(data_dir) / s / task.label_file)
                   if (Path(data_dir) / s / task.label_file).is_file() else "missing" for s in sets},
        "features": {st["name"]: {s: features_record(Path(st["feats_dir"]) / s) for s in sets} for st in streams},
    }


def write_meta(set_dir: Path, meta: Mapping) -> dict:
    """Write ``meta.json`` atomically (defaults for ``modality`` and ``schema_version`` added); returns it."""
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"meta.json for {set_dir}: lacks {', '.join(missing)}")
    meta = {**META_DEFAULTS, "schema_version": SCHEMA_VERSION, **meta}
    if meta["modality"] not in _modalities():
        raise ValueError(f"meta.json for {set_dir}: modality {meta['modality']!r} is not one of "
                         f"{', '.join(_modalities())}")
    path = Path(set_dir) / "meta.json"
    tmp = path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return meta


# ---------------------------------------------------------------- streams

@dataclasses.dataclass(frozen=True)
class Stream:
    """One input of a head: the dump ``feats_dir`` (``dump/<tag>``, holding ``<set>/``), read as ``kind``."""

    name: str
    feats_dir: Path
    layers: tuple[int, ...]
    kind: str = "pooled"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"stream {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")


@dataclasses.dataclass
class StreamData:
    """The inputs of one stream for a list of utterances (in memory, or frames read per batch)."""

    kind: str
    utts: list[str]
    present: torch.Tensor                    # (N,) bool
    mean: torch.Tensor | None = None         # pooled: (N, L, D)
    std: torch.Tensor | None = None
    frames: list | None = None               # frames: per utterance (T, L, D) tensors ...
    frame_reader: Callable | None = None     # ... or read per batch

    def batch(self, idx: Sequence[int], device: str = "cpu") -> dict[str, torch.Tensor]:
        idx_t = torch.as_tensor(list(idx), dtype=torch.long)
        present = self.present[idx_t].to(device)
        if self.kind == "pooled":
            return {"mean": self.mean[idx_t].to(device), "std": self.std[idx_t].to(device), "present": present}
        seqs = [self.frames[i] if self.frames is not None else self.frame_reader(self.utts[i]) for i in idx]
        lengths = torch.tensor([s.shape[0] for s in seqs])
        frames = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        return {"frames": frames.to(device), "lengths": lengths.to(device), "present": present}


def check_ark_paths(scp: Path) -> None:
    """Refuse an scp whose matrices would be read from another dump than its own.

    Stage 2 writes absolute ark paths.  A relative one (dumps of older versions) is read against the working
    dir: right only in the working dir that wrote it; elsewhere it would read this dir's ark of the same
    name at the other dump's offsets, i.e. other utterances' features.  So a relative ark path must lead
    into the scp's own folder, and every ark must exist.
    """
    scp = Path(scp)
    home = scp.parent.resolve()
    with open(scp, encoding="utf-8") as f:
        arks = {line.split(maxsplit=1)[1].rstrip("\n").rsplit(":", 1)[0] for line in f if len(line.split()) > 1}
    for ark in sorted(arks):
        path = Path(ark)
        if not path.is_absolute() and not path.resolve().is_relative_to(home):
            raise ValueError(f"{scp}: ark path {ark} is relative to the working dir that wrote it; from here "
                             f"({Path.cwd()}) it reads {path.resolve()}, outside {home}: a dump of another "
                             "working dir. Rerun stage 2 for it there (arks are now written with absolute "
                             "paths), or extract these features in this working dir")
        if not path.is_file():
            raise FileNotFoundError(f"{scp}: ark {ark} not found (the dump was moved or partly deleted): "
                                    "rerun stage 2 for this set")


def _read_pooled(scp: Path, cache: dict | None) -> dict[str, np.ndarray]:
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found: run stage 2 (feature extraction) first")
    key = ("pooled", str(scp.resolve()), os.path.getmtime(scp))
    if cache is not None and key in cache:
        return cache[key]
    check_ark_paths(scp)
    table = {u: np.asarray(m, dtype=np.float32) for u, m in kaldiio.load_scp_sequential(str(scp))}
    if cache is not None:
        cache[key] = table
    return table


def _check_missing(utts: Sequence[str], table, scp: Path, where: str, allow_missing: bool) -> list[bool]:
    present = [u in table for u in utts]
    if not allow_missing and not all(present):
        missing = [u for u, p in zip(utts, present) if not p]
        raise KeyError(f"{len(missing)} utterance(s) of {where} have no features in {scp} "
                       f"(first: {missing[0]}); rerun stage 2 for this set")
    return present


def load_stream(set_dir: Path, utts: Sequence[str], layers: Sequence[int], kind: str, *, where: str = "the task",
                cache: dict | None = None, log: Callable[[str], None] = lambda _: None,
                preload_frames_gb: float = 2.0, allow_missing: bool = False) -> StreamData:
    """Inputs of ``layers`` (upstream layer indices) of ``utts`` from the feature set dir ``set_dir``.

    ``cache`` (a dict shared by the runs of one process) keeps tables already read; ``where`` names the
    utterance list in errors (e.g. the label file).
    """
    set_dir, utts, layers = Path(set_dir), list(utts), [int(x) for x in layers]
    meta = read_meta(set_dir)
    num_layers, dim = int(meta["num_layers"]), int(meta["dim"])
    bad = [x for x in layers if not 0 <= x < num_layers]
    if bad:
        raise ValueError(f"{set_dir}/meta.json: {num_layers} layers, but layers {bad} were asked for")
    if kind == "pooled":
        out = {}
        for stat in ("mean", "std"):
            scp = set_dir / f"pooled_{stat}.scp"
            table = _read_pooled(scp, cache)
            present = _check_missing(utts, table, scp, where, allow_missing)
            zero = np.zeros((num_layers, dim), np.float32)
            out[stat] = torch.from_numpy(np.stack([table.get(u, zero)[layers] for u in utts]))
        return StreamData(kind, utts, torch.tensor(present, dtype=torch.bool), out["mean"], out["std"])
    if kind != "frames":
        raise ValueError(f"input kind {kind!r} is not one of {', '.join(KINDS)}")
    frame_layers = list(meta.get("frame_layers") or [])
    scp = set_dir / "frames.scp"
    if not scp.is_file() or not frame_layers:
        raise FileNotFoundError(f"{scp} not found: this head needs frame-level features; set frame_layers in the "
                                "upstream config and rerun stage 2")
    not_dumped = [x for x in layers if x not in frame_layers]
    if not_dumped:
        raise ValueError(f"{set_dir}: frames of layers {frame_layers} were dumped, not of {not_dumped}")
    pos = [frame_layers.index(x) for x in layers]
    check_ark_paths(scp)
    reader = kaldiio.load_scp(str(scp))
    present = _check_missing(utts, reader, scp, where, allow_missing)
    empty = torch.zeros((1, len(pos), dim))

    def read(utt: str) -> torch.Tensor:
        if utt not in reader:
            return empty
        m = np.asarray(reader[utt], dtype=np.float32)
        return torch.from_numpy(m.reshape(m.shape[0], len(frame_layers), dim)[:, pos])

    n2f = set_dir / "utt2num_frames"
    num_frames = {u: int(v) for u, v in read_table(n2f).items()} if n2f.is_file() else {}
    size_gb = sum(num_frames.get(u, 0) for u in utts) * len(pos) * dim * 4 / 1e9
    data = StreamData(kind, utts, torch.tensor(present, dtype=torch.bool))
    if size_gb <= preload_frames_gb:
        # one dict per scp and layers, shared by the tasks of a job list: each adds the utterances it lacks
        key = ("frames", str(scp.resolve()), os.path.getmtime(scp), tuple(pos))
        frames = cache.setdefault(key, {}) if cache is not None else {}
        todo = [u for u in utts if u not in frames]
        for u in tqdm(todo, desc=f"read {scp}", file=sys.stderr, mininterval=5, disable=len(todo) < 2000 or not sys.stderr.isatty()):
            frames[u] = read(u)
        data.frames = [frames[u] for u in utts]
    else:
        log(f"{scp}: {size_gb:.1f} GB of frames > preload_frames_gb {preload_frames_gb}: reading per batch")
        data.frame_reader = read
    return data


# ---------------------------------------------------------------- examples = utterances + targets + streams

@dataclasses.dataclass
class Examples:
    """The utterances of one set of one task: targets and every stream's inputs."""

    utts: list[str]
    targets: np.ndarray | None               # (N,) or None (inference)
    streams: dict[str, StreamData]
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utts)

    def batch(self, idx: Sequence[int], device: str = "cpu") -> dict:
        """The batch of utterances ``idx`` in the format of the module docstring."""
        out = {"utts": [self.utts[i] for i in idx],
               "streams": {name: s.batch(idx, device) for name, s in self.streams.items()}}
        if self.targets is not None:
            out["target"] = torch.as_tensor(self.targets[list(idx)]).to(device)
        return out


def load_examples(utts: Sequence[str], targets: np.ndarray | None, streams: Sequence[Stream], set_name: str, *,
                  where: str = "the task", cache: dict | None = None, log: Callable[[str], None] = lambda _: None,
                  preload_frames_gb: float = 2.0, left_out: Mapping[str, int] | None = None,
                  allow_missing: bool = False) -> Examples:
    """Examples of ``utts`` with the inputs of every stream from ``<stream.feats_dir>/<set_name>``
    (``allow_missing``: an utterance without features in a stream gets ``present`` False there)."""
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise ValueError(f"two streams have the same name: {names}")
    data = {s.name: load_stream(Path(s.feats_dir) / set_name, utts, s.layers, s.kind, where=where, cache=cache,
                                log=log, preload_frames_gb=preload_frames_gb, allow_missing=allow_missing)
            for s in streams}
    return Examples(list(utts), targets, data, dict(left_out or {}))


def drop_stage2_excluded(utts: Sequence[str], targets, streams: Sequence[Stream], set_name: str, where: str,
                         log: Callable[[str], None] = lambda _: None):
    """``(utts, targets)`` without the utterances stage 2 excluded from every stream (``<feats_dir>/<set>/
    excluded``: unreadable audio, no decodable video, an empty transcript), logged with their count: left
    out, never silently.  With several streams, an utterance excluded from some of them only stays: it lacks
    features there, which :func:`check_stream_utts` refuses unless ``allow_missing`` makes it a missing
    modality (docs/fusion.md)."""
    gone: dict[str, dict[str, str]] = {}
    for st in streams:
        path = Path(st.feats_dir) / set_name / "excluded"
        if path.is_file():
            for u, why in read_table(path).items():
                gone.setdefault(u, {})[st.name] = f"{path}: {why}"
    keep = [i for i, u in enumerate(utts) if len(gone.get(u, ())) < len(streams)]
    if len(keep) == len(utts):
        return list(utts), targets
    dropped = [u for u in utts if len(gone.get(u, ())) == len(streams)]
    log(f"{where}: left out {len(dropped)} utterance(s) that stage 2 excluded (first: {dropped[0]}: "
        f"{next(iter(gone[dropped[0]].values()))})")
    return [utts[i] for i in keep], (None if targets is None else targets[keep])


def scp_utts(scp: Path) -> list[str]:
    """The utterance ids of a Kaldi scp (first field of each line), without reading the matrices."""
    scp = Path(scp)
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found: run stage 2 (feature extraction) first")
    with open(scp, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def check_stream_utts(utts: Sequence[str], streams: Sequence[Stream], set_name: str, where: str,
                      allow_missing: bool, log: Callable[[str], None] = lambda _: None) -> dict[str, list[str]]:
    """Utterances of ``utts`` without features, per stream; an error naming them unless ``allow_missing``
    (then they are missing modalities, logged), and always one for an utterance that no stream has."""
    missing = {}
    for st in streams:
        scp = Path(st.feats_dir) / set_name / "pooled_mean.scp"
        have = set(scp_utts(scp))
        gone = [u for u in utts if u not in have]
        if gone:
            missing[st.name] = gone
    if not missing:
        return missing

    def lacks(name: str, got: list[str]) -> str:
        set_dir = Path(next(s.feats_dir for s in streams if s.name == name)) / set_name
        excluded = set(read_table(set_dir / "excluded")) if (set_dir / "excluded").is_file() else set()
        why = sum(u in excluded for u in got)
        return (f"stream {name} ({set_dir}) lacks {len(got)}: {' '.join(got[:10])}{' ...' if len(got) > 10 else ''}"
                + (f" ({why} excluded by stage 2, see {set_dir}/excluded)" if why else ""))

    text = "; ".join(lacks(n, g) for n, g in missing.items())
    if not allow_missing:
        raise ValueError(f"{where}: the streams do not have the same utterances: {text}. Extract them (stage 2), "
                         "or set allow_missing: true (--conf allow_missing=true; run.sh --fusion_allow_missing "
                         "true) to treat them as missing modalities")
    none = [u for u in utts if all(u in g for g in missing.values()) and len(missing) == len(streams)]
    if none:
        raise ValueError(f"{where}: {len(none)} utterance(s) have features in no stream (first: {none[0]})")
    log(f"{where}: allow_missing: {text}; they are scored and trained as missing modalities")
    return missing


def iter_batches(n: int, batch_size: int, order: Sequence[int] | None = None):
    """Index lists of consecutive batches over ``order`` (default 0..n-1)."""
    order = list(range(n)) if order is None else list(order)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]

"""What a stage-2 modality is, and the registry the one job runner (etser.features.extract) looks it up in.

A modality is one file in ``etser/features/modalities/`` (or any module a user imports) that builds a
``Modality`` and calls ``register`` on it.  It says everything stage 2 needs to know about its inputs and its
models: the data dir's input table it reads (``wav.scp``, ``text_raw``, ``video.scp``, ...), what of that table
enters the dump's identity (the values, and for paths the files' size and modification time), its config
defaults and checks, how to build its model from a config, and how to turn the utterances of one job into
pooled statistics (and optional frames).  The runner, the config loader (``etser.features.upstream``) and the
release fit (``etser.plan``) ask the registry; none of them lists modalities or branches on their names.

A config names its modality with ``modality: <name>``; a config without that key belongs to the modality
registered with ``implicit=True`` (speech, whose configs predate modalities: their normalised configs carry no
``modality`` key, so their tags stay as they were).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

FRAME_DTYPES = ("float16", "float32", "kaldi_compressed")
NOT_HASHED = ("download", "batch", "on_bad_input")  # hints and resources: never decide the features


class UpstreamError(Exception):
    """A config or checkpoint problem; the message says which file and what to do."""


class InputError(Exception):
    """An input a modality cannot read where the config says to fail on bad input (e.g. audio that cannot be
    decoded); the message names the utterance and the file."""


# ---------------------------------------------------------------- config helpers shared by every modality

def merge_defaults(user: dict, defaults: dict, where: str) -> dict:
    """``defaults`` overridden by ``user``, recursively; an unknown key is an error naming the closest known one."""
    out = copy.deepcopy(defaults)
    for key, value in user.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UpstreamError(f"{where}: unknown key {key!r}{hint}; known: {', '.join(defaults)}")
        if isinstance(defaults[key], dict) and key != "args":
            if not isinstance(value, dict):
                raise UpstreamError(f"{where}: {key!r} must be a mapping")
            out[key] = merge_defaults(value, defaults[key], f"{where}: {key}")
        else:
            out[key] = value
    return out


def number(section: dict, key: str, name: str, where: str, kind=float):
    try:
        return kind(section[key])
    except (TypeError, ValueError):
        raise UpstreamError(f"{where}: {name}.{key} must be a number, got {section[key]!r}") from None


def check_frames(cfg: dict, where: str) -> None:
    """The ``frames`` section every modality shares: which layers' frames are dumped, and in what dtype."""
    f = cfg["frames"]
    layers = f["layers"]
    if not (layers is None or layers == "all"
            or (isinstance(layers, list) and layers and all(isinstance(i, int) for i in layers))):
        raise UpstreamError(f"{where}: frames.layers must be null, 'all' or a non-empty list of layer indices")
    if f["dtype"] not in FRAME_DTYPES:
        raise UpstreamError(f"{where}: frames.dtype must be one of {', '.join(FRAME_DTYPES)}")


# ---------------------------------------------------------------- what a job hands a modality, and gets back

@dataclass
class BadInput:
    """An utterance whose input cannot be used: listed in ``<dir>/excluded`` with this reason (or, with
    ``on_bad_input: fail``, the job stops naming it)."""

    reason: str


@dataclass
class Pooled:
    """One utterance's features: (L, D) float32 mean and population std, the number of frames (tokens,
    clips) they pool, and optional (T, k * D) frames of the chosen layers."""

    utt: str
    mean: np.ndarray
    std: np.ndarray
    num_frames: int
    frames: np.ndarray | None = None


@dataclass
class Job:
    """One job's share of a data dir, as the runner gives it to ``Modality.features``."""

    data: Path                   # the data dir
    src: Path                    # the input table read
    table: dict[str, str]        # utt -> its value in that table
    order: list[str]             # this job's utterances in the order to process them
    where: Callable[[str], str]  # "utterance X (file)" for messages
    device: str
    num_threads: int
    num_workers: int | None
    prefetch_depth: int
    stats: dict = field(default_factory=dict)  # what the modality wants in the job's marker (summed by merge)


# ---------------------------------------------------------------- the modality interface

class Modality:
    """Base of every modality; a subclass fills in what differs.  See the module docstring."""

    name: str = ""
    implicit: bool = False       # configs without a 'modality' key are this modality's
    input_table: str = ""        # the data dir's table read (``input_file`` may choose another from the config)
    files: bool = True           # the table's values are file paths (their identity enters the dump's)
    allow_empty: bool = False    # an empty value is an input (an empty transcript), not a malformed line
    notes: tuple[str, ...] = ()  # per-utterance tables besides ``excluded`` that jobs write and merge joins
    made_by: str = "stage 1"
    time_axis: str = "frames"    # what the features pool over (frames, tokens, clips)

    # -- configs
    def normalize(self, user: dict, where: str) -> dict:
        raise NotImplementedError

    def check_ckpt(self, cfg: dict) -> bool:
        """Checks of this modality's checkpoints before any model code runs; True when they are complete (the
        generic checks of etser.features.upstream are then skipped)."""
        return False

    # -- inputs and identity
    def input_file(self, cfg: dict, data: Path) -> Path:
        return Path(data) / self.input_table

    def read_inputs(self, cfg: dict, data: Path) -> tuple[Path, dict[str, str]]:
        """The config's input table of a data dir (utt -> value); FileNotFoundError saying who writes it."""
        from etser.datadir import read_table

        path = self.input_file(cfg, Path(data))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; the {self.name} upstream reads it ({self.made_by} writes it)")
        return path, read_table(path, allow_empty_value=self.allow_empty)

    def fit_digest(self, cfg: dict) -> str:
        """What else decides the features besides the config and the inputs (e.g. a fitted transform's
        training text); "" when nothing."""
        return ""

    def where(self, utt: str, src: Path, table: dict[str, str]) -> str:
        return f"utterance {utt} ({table[utt] if self.files else src})"

    def order(self, cfg: dict, part: list[str], table: dict[str, str], data: Path) -> list[str]:
        """The order a job processes its utterances in (the dump does not depend on it)."""
        return list(part)

    # -- models and features
    def build(self, cfg: dict, device: str):
        raise NotImplementedError

    def features(self, cfg: dict, model, job: Job) -> Iterator[tuple[str, Pooled | BadInput, dict]]:
        """``(utt, Pooled | BadInput, notes)`` for every utterance of ``job.order``; ``notes`` maps names of
        ``self.notes`` to what is recorded for the utterance (falsy: nothing)."""
        raise NotImplementedError

    # -- records
    def axis(self, cfg: dict) -> str:
        return self.time_axis

    def summary(self, stats: dict, lists: dict[str, dict]) -> list[str]:
        """Pieces of the job's last log line (after the utterance count)."""
        return []

    def meta(self, cfg: dict, markers: list[dict], tables: dict[str, dict], src: Path) -> dict:
        """This modality's entries of ``meta.json`` (the time axis, its rate, counts)."""
        return {}


# ---------------------------------------------------------------- the registry

_REGISTRY: dict[str, Modality] = {}
_SHIPPED = "etser.features.modalities"


def register(modality: Modality) -> Modality:
    """Make a modality known by its name (called by the modality's own file when it is imported)."""
    if not modality.name or not modality.name.isidentifier():
        raise ValueError(f"a modality needs a name that is an identifier, got {modality.name!r}")
    if modality.implicit and any(m.implicit and m.name != modality.name for m in _REGISTRY.values()):
        raise ValueError(f"modality {modality.name}: another modality already owns configs without 'modality'")
    _REGISTRY[modality.name] = modality
    return modality


def _discover() -> None:
    """Import every module of the shipped modalities package: each registers itself."""
    package = importlib.import_module(_SHIPPED)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_SHIPPED}.{info.name}")


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str | None, where: str = "upstream config") -> Modality:
    """The modality called ``name`` (None: the implicit one); UpstreamError listing the known ones."""
    if name is None or name not in _REGISTRY:
        _discover()
    if name is None:
        found = [m for m in _REGISTRY.values() if m.implicit]
        if found:
            return found[0]
        raise UpstreamError(f"{where}: no 'modality' given and no modality takes such configs")
    if name not in _REGISTRY:
        raise UpstreamError(f"{where}: modality must be one of {', '.join(sorted(_REGISTRY))}, got {name!r}")
    return _REGISTRY[name]


def of(cfg: dict, where: str = "upstream config") -> Modality:
    """The modality of a config (normalised or not)."""
    return get(cfg.get("modality") or None, where)


# ---------------------------------------------------------------- modalities whose models encode whole inputs

def pool(utt: str, x, layers: list[int] | None) -> Pooled:
    """(L, T, D) tensor -> mean and population std in float64, kept as float32, and optional frames."""
    x64 = x.double()
    mean, std = x64.mean(dim=1), x64.std(dim=1, correction=0)
    frames = None
    if layers is not None:
        frames = x[layers].permute(1, 0, 2).reshape(x.shape[1], -1).float().numpy()
    return Pooled(utt, mean.float().numpy(), std.float().numpy(), int(x.shape[1]), frames)


class EncoderModality(Modality):
    """A modality whose model is an encoder with ``prepare(input) -> item``, ``size(item)`` (its frames or
    tokens, for batching) and ``encode([item, ...]) -> [(L, T, D) tensor, ...]``: the input of one utterance is
    prepared in a background thread, batched, encoded and pooled over T.  A subclass gives ``loader`` (what
    prepares one utterance) and ``full`` (when a batch is full)."""

    prefetch_depth: int | None = None  # items prepared ahead (None: the job's prefetch depth)
    defaults: dict = {}                # the config's keys and defaults ('modality' included: it is hashed)
    model_names: tuple[str, ...] = ()  # built-in models a config names with 'name' (else a 'factory')
    notes = ("no_face", "truncated", "rotated")

    def normalize(self, user: dict, where: str) -> dict:
        cfg = merge_defaults(user, self.defaults, where)
        if bool(cfg["name"]) == bool(cfg["factory"]):
            raise UpstreamError(f"{where}: give exactly one of 'name' or 'factory'")
        if cfg["name"] and cfg["name"] not in self.model_names:
            raise UpstreamError(f"{where}: {self.name} name {cfg['name']!r} unknown; one of "
                                f"{', '.join(self.model_names)} (or a factory)")
        cfg["args"] = cfg["args"] or {}
        if not isinstance(cfg["args"], dict):
            raise UpstreamError(f"{where}: 'args' must be a mapping")
        if cfg["name"] and cfg["name"].startswith(("hf_", "timm_")) and not cfg["ckpt"]:
            raise UpstreamError(f"{where}: {cfg['name']} needs 'ckpt' (a local Hugging Face directory)")
        self.check(cfg, where)
        for key, allowed in {"dtype": ("float32", "float16", "bfloat16"), "on_bad_input": ("exclude", "fail")}.items():
            if cfg[key] not in allowed:
                raise UpstreamError(f"{where}: {key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
        if number(cfg["batch"], "max_items", "batch", where, int) < 1:
            raise UpstreamError(f"{where}: batch.max_items must be >= 1")
        check_frames(cfg, where)
        return cfg

    def check(self, cfg: dict, where: str) -> None:
        """This modality's own checks of a config (UpstreamError naming ``where``)."""

    def loader(self, cfg: dict, encoder, job: Job) -> Callable:
        """utt -> ``(item, notes)`` or ``BadInput``."""
        raise NotImplementedError

    def full(self, cfg: dict, encoder, batch: list, item) -> bool:
        return len(batch) >= int(cfg["batch"]["max_items"])

    def encode(self, cfg: dict, encoder, items: list) -> list:
        return encoder.encode(items)

    def encoded(self, cfg: dict, encoder, loaded) -> Iterator[tuple[str, object, dict]]:
        """``(utt, (L, T, D) tensor | BadInput, notes)`` in input order, batched by ``full``."""
        batch: list = []  # (utt, item, notes)

        def flush():
            if batch:
                for (utt, _, notes), x in zip(batch, self.encode(cfg, encoder, [b[1] for b in batch])):
                    yield utt, x, notes
                batch.clear()

        for utt, got in loaded:
            if isinstance(got, BadInput):
                yield from flush()
                yield utt, got, {}
                continue
            item, notes = got
            if batch and self.full(cfg, encoder, batch, item):
                yield from flush()
            batch.append((utt, item, notes))
        yield from flush()

    def depth(self, job: Job) -> int:
        """Items prepared ahead of the encoder."""
        return job.prefetch_depth if self.prefetch_depth is None else min(job.prefetch_depth, self.prefetch_depth)

    def loaded(self, cfg: dict, encoder, job: Job) -> Iterator:
        """What ``encoded`` reads: ``(utt, (item, notes) | BadInput)`` in job order, prepared by ``loader`` in a
        background thread ``depth`` items ahead."""
        from etser.features.dumpio import prefetch

        load = self.loader(cfg, encoder, job)

        def guarded(utt):
            try:
                return load(utt)
            except Exception as e:  # e.g. a tokenizer or image processor failing on this input
                raise RuntimeError(f"{job.where(utt)}: preparing the input failed: {type(e).__name__}: {e}") from e

        return prefetch(job.order, guarded, self.depth(job))

    def features(self, cfg: dict, encoder, job: Job):
        from etser.features.dumpio import resolve_layers

        layers, resolved = None, False
        job.stats["encoder"] = getattr(encoder, "info", {})
        for utt, x, notes in self.encoded(cfg, encoder, self.loaded(cfg, encoder, job)):
            if isinstance(x, BadInput):
                yield utt, x, notes
                continue
            if x.dim() != 3 or x.shape[1] == 0:
                raise RuntimeError(f"{job.where(utt)}: the encoder gave shape {tuple(x.shape)}, not (L, T>0, D)")
            if not resolved:
                layers, resolved = resolve_layers(cfg["frames"]["layers"], int(x.shape[0])), True
            yield utt, pool(utt, x, layers), notes

    def frame_rate(self, cfg: dict) -> float | None:
        return None

    def meta(self, cfg: dict, markers: list[dict], tables: dict[str, dict], src: Path) -> dict:
        axis = self.axis(cfg)
        return {"time_axis": axis, "frame_rate": self.frame_rate(cfg), "stride_samples": None,
                "pooled": f"mean and population std of each layer over the utterance's {axis}, (L, D)",
                "input": str(src), **{f"num_{k}": len(tables[k]) for k in self.notes},
                "encoder": markers[0].get("encoder", {})}

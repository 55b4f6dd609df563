"""Stage 2: upstream features of a data directory into Kaldi ark/scp (docs/DESIGN.md, dump/<tag>/<set>/).

Per utterance: the time-mean and time-std (population, over valid frames) of every layer, (L, D) float32
each, and, when the config asks, the frames of chosen layers.  One job handles one contiguous block of the
sorted ``wav.scp`` (the same block for the same ``--nj``); ``merge`` joins the jobs' tables::

    python -m etser.features.extract job   --config conf/upstream/X.yaml --data data/train --dir dump/<tag>/train \\
                                  --nj 4 --job 1 [--ngpu 0] [--num_threads 1]
    python -m etser.features.extract merge --config conf/upstream/X.yaml --data data/train --dir dump/<tag>/train --nj 4

A job writes ``<dir>/split<nj>/*.<job>.ark.tmp``, renames the arks when it is through, writes its scp
tables and last its marker ``done.<job>``; a job whose marker matches its utterances and config is
skipped, any other is redone from the start.  ``merge`` writes ``pooled_mean.scp`` last, so that file exists
only when the set is complete.

Long utterances are cut into windows (``chunk.seconds``, overlapping by ``chunk.overlap``); of each
window the frames nearest its centre are kept, so every frame of the stitched sequence comes from the
window where it has the most context on both sides.  Model memory is bounded by the window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from etser.features.audio import TARGET_RATE, AudioLoadError, audio_seconds, load_audio
from etser.datadir import c_sort_key, read_table, write_table
from etser.provenance import file_identity, table_identity
from etser.features.dumpio import (_informative, _peak_rss_mb, _read_marker, finished_markers, job_arks, prefetch,  # noqa: F401
                          resolve_layers, split_keys, write_matrix)

MIN_SAMPLES = 800  # 0.05 s; shorter audio is zero-padded to this (S3PRL's S3PRLUpstream does the same)
KINDS = ("pooled_mean", "pooled_std", "frames")


# ---------------------------------------------------------------- windows

def plan_windows(n: int, stride: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int | None]]:
    """Windows ``(start, end, keep_from, keep_to)`` covering ``n`` samples; frames are global indices.

    Window k starts at ``k * hop`` (hop = chunk - overlap, rounded down to whole frames); the last window
    ends at ``n`` and starts on a frame boundary at most ``chunk`` before it.  Between two windows the
    boundary is the middle of their overlap, so each kept frame is at least overlap/2 from its window's
    edge (except at the utterance's own ends).  ``keep_to`` None means "to the window's last frame".
    """
    if n <= chunk:
        return [(0, n, 0, None)]
    hop = (chunk - overlap) // stride * stride
    if hop <= 0 or chunk - hop < 2 * stride:
        raise ValueError(f"chunk of {chunk} samples with overlap {overlap} leaves no room for stride {stride}")
    k = -(-(n - chunk) // hop)  # windows before the last one
    starts = [i * hop for i in range(k)] + [-(-(n - chunk) // stride) * stride]
    ends = [min(s + chunk, n) for s in starts]
    bounds = [((starts[i + 1] + ends[i]) // 2) // stride for i in range(k)]
    keep_from = [0] + bounds
    keep_to: list[int | None] = bounds + [None]
    return [(starts[i], ends[i], keep_from[i], keep_to[i]) for i in range(k + 1)]


# ---------------------------------------------------------------- per-utterance accumulation

@dataclass
class UttFeatures:
    """What extraction gives for one utterance."""

    utt: str
    mean: np.ndarray            # (L, D) float32
    std: np.ndarray             # (L, D) float32, population std over frames
    num_frames: int
    seconds: float              # audio length at 16 kHz
    frames: np.ndarray | None   # (T, len(frame_layers) * D) float32, or None


@dataclass
class _Utt:
    utt: str
    samples: int
    windows: int
    done: int = 0
    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    frames: list = field(default_factory=list)

    def add(self, x, frame_layers):
        """x: (L, t, D) tensor of kept frames; merge count/mean/M2 (Chan et al.) in float64."""
        t = x.shape[1]
        if t == 0:
            return
        mean = x.mean(dim=1)
        m2 = ((x - mean.unsqueeze(1)) ** 2).sum(dim=1)
        mean, m2 = mean.double().cpu().numpy(), m2.double().cpu().numpy()
        if self.n == 0:
            self.n, self.mean, self.m2 = t, mean, m2
        else:
            n = self.n + t
            delta = mean - self.mean
            self.mean = self.mean + delta * (t / n)
            self.m2 = self.m2 + m2 + delta ** 2 * (self.n * t / n)
            self.n = n
        if frame_layers is not None:
            sel = x[frame_layers]  # (k, t, D)
            self.frames.append(sel.permute(1, 0, 2).reshape(t, -1).cpu().numpy())

    def result(self, where: str) -> UttFeatures:
        if self.n == 0:
            raise RuntimeError(f"{where}: the upstream gave no frames for {self.samples / TARGET_RATE:.3f} s of audio")
        frames = np.concatenate(self.frames, axis=0) if self.frames else None
        return UttFeatures(self.utt, self.mean.astype(np.float32), np.sqrt(self.m2 / self.n).astype(np.float32),
                           self.n, self.samples / TARGET_RATE, frames)


# ---------------------------------------------------------------- extraction

def iter_features(upstream, items: Iterable[tuple[str, np.ndarray]], where: Callable[[str], str] = str,
                  frame_layers="config") -> Iterator[UttFeatures]:
    """Features of ``(utt, 16 kHz float32 waveform)`` pairs, in input order.

    Batches follow the config's policy: ``equal_length`` puts only segments of identical length in one batch
    (no padding, so exact for any model); ``padded`` pads and keeps each item's ``upstream.num_frames(n)``
    valid frames.  ``frame_layers``: "config" (the config's frames.layers), None, "all" or a list.
    """
    import torch

    cfg = upstream.cfg
    policy, max_items = cfg["batch"]["policy"], int(cfg["batch"]["max_items"])
    max_samples = int(float(cfg["batch"]["max_seconds"]) * TARGET_RATE)
    stride = upstream.stride
    chunk = max(int(cfg["chunk"]["seconds"] * TARGET_RATE) // stride * stride, stride)
    overlap = int(cfg["chunk"]["overlap"] * TARGET_RATE)
    layer_spec = cfg["frames"]["layers"] if frame_layers == "config" else frame_layers
    layers: list[int] | None = None
    resolved = False

    def segments():
        for utt, wav in items:
            if wav.ndim != 1 or len(wav) == 0:
                raise ValueError(f"{where(utt)}: expected a non-empty 1-D waveform, got shape {wav.shape}")
            if len(wav) < MIN_SAMPLES:
                print(f"warning: {where(utt)}: {len(wav) / TARGET_RATE:.3f} s of audio zero-padded to "
                      f"{MIN_SAMPLES / TARGET_RATE} s", file=sys.stderr)
                wav = np.pad(wav, (0, MIN_SAMPLES - len(wav)))
            wins = plan_windows(len(wav), stride, chunk, overlap)
            state = _Utt(utt, len(wav), len(wins))
            tensor = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
            for start, end, keep_from, keep_to in wins:
                yield state, tensor[start:end], start // stride, keep_from, keep_to

    def fits(batch, seg) -> bool:
        if len(batch) >= max_items:
            return False
        n = len(seg[1])
        if policy == "equal_length":
            return n == len(batch[0][1]) and n * (len(batch) + 1) <= max_samples
        return max(n, max(len(b[1]) for b in batch)) * (len(batch) + 1) <= max_samples

    def run(batch):
        nonlocal layers, resolved
        try:
            hs = upstream([b[1] for b in batch])
        except RuntimeError as e:  # torch's errors (out of memory first of all) name no utterance
            utts = list(dict.fromkeys(b[0].utt for b in batch))
            more = f" and {len(utts) - 1} more" if len(utts) > 1 else ""
            raise RuntimeError(f"{where(utts[0])}{more}: the upstream failed on a batch of {len(batch)} "
                               f"segments of up to {max(len(b[1]) for b in batch) / TARGET_RATE:.2f} s "
                               f"(lower batch.max_seconds or chunk.seconds if out of memory): {e}") from e
        if not resolved:
            layers = resolve_layers(layer_spec, len(hs))
            resolved = True
        t_max = hs[0].shape[1]
        for i, (state, wav, offset, keep_from, keep_to) in enumerate(batch):
            valid = t_max if len(batch) == 1 or policy == "equal_length" else min(upstream.num_frames(len(wav)), t_max)
            lo = keep_from - offset
            hi = valid if keep_to is None else keep_to - offset
            if not (0 <= lo <= hi <= valid):
                raise RuntimeError(f"{where(state.utt)}: window of {len(wav)} samples gave {valid} frames, "
                                   f"fewer than the kept range {lo}:{hi}; raise chunk.overlap")
            state.add(torch.stack([h[i, lo:hi] for h in hs]), layers)
            state.done += 1
            if state.done == state.windows:
                expected = upstream.num_frames(state.samples) if state.windows > 1 else None
                if expected is not None and state.n != expected:
                    # stitched windows must give what one forward of the whole utterance would: anything
                    # else means a wrong frame-rate assumption, and frames would be dropped or doubled
                    raise RuntimeError(f"{where(state.utt)}: {state.windows} windows stitched to {state.n} frames, "
                                       f"but the whole {state.samples / TARGET_RATE:.2f} s give {expected} at "
                                       f"{upstream.stride} samples per frame; check the upstream's frame rate "
                                       "(get_downsample_rates) or use a longer chunk.seconds")
                yield state.result(where(state.utt))

    batch: list = []
    for seg in segments():
        if batch and not fits(batch, seg):
            yield from run(batch)
            batch = []
        batch.append(seg)
    if batch:
        yield from run(batch)


def extract_wavs(upstream, wavs: dict[str, str] | Iterable[tuple[str, str]],
                 frame_layers=None) -> dict[str, UttFeatures]:
    """In-memory features of ``{utt: wav path}``: what inference calls (no files written)."""
    pairs = list(wavs.items()) if isinstance(wavs, dict) else list(wavs)
    paths = dict(pairs)
    loaded = ((utt, wav) for (utt, _), wav in prefetch(pairs, lambda p: load_audio(p[1], p[0])))
    feats = iter_features(upstream, loaded, where=lambda u: f"utterance {u} ({paths[u]})", frame_layers=frame_layers)
    return {f.utt: f for f in feats}


def pooled_features(upstream, wavs: dict[str, str] | Iterable[tuple[str, str]]
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(utts, means (N, L, D), stds (N, L, D))`` for wav files, in the given order (inference)."""
    pairs = list(wavs.items()) if isinstance(wavs, dict) else list(wavs)  # an iterator is read once
    feats = extract_wavs(upstream, pairs, frame_layers=None)
    utts = [u for u, _ in pairs]
    return utts, np.stack([feats[u].mean for u in utts]), np.stack([feats[u].std for u in utts])


# ---------------------------------------------------------------- ark writing

def _job_id(cfg_hash: str, part: list[str], wav: dict[str, str]) -> str:
    """What a job's output depends on: the config, its utterances, their paths and the files themselves (size
    and modification time), so audio replaced in place redoes the job that read it."""
    h = hashlib.sha256(cfg_hash.encode())
    for utt in part:
        h.update(f"\n{utt} {wav[utt]} {file_identity(wav[utt])}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _durations(data: Path, keys: list[str], wav: dict[str, str]) -> dict[str, float]:
    """Seconds per utterance from utt2dur (stage 1 writes it), else from the audio headers."""
    dur = {}
    if (data / "utt2dur").is_file():
        for k, v in read_table(data / "utt2dur").items():
            try:
                dur[k] = float(v)
            except ValueError:
                pass
    return {k: dur[k] if k in dur else audio_seconds(wav[k]) for k in keys}


def run_job(config: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int = 1,
            job: int = 1, ngpu: int = 0, num_threads: int = 1, prefetch_depth: int = 8, upstream=None,
            num_workers: int | None = None) -> dict:
    """Extract the features of job ``job`` of ``nj``; returns its marker dict (also when skipped).

    ``num_workers``: processes that decode and resample (etser/loader.py); 0: one background thread;
    None: ``num_threads`` on CUDA (the cores go to reading), 0 on CPU (they go to the forward).

    ``upstream``: an already built model of this config (the benchmark reuses one); the returned dict then
    also holds ``elapsed_seconds``, the time of the extraction loop (reading, forward, writing).
    """
    from etser.features.upstream import build_upstream, config_hash, load_config

    if not 1 <= job <= nj:
        raise ValueError(f"--job {job} outside 1..{nj}")
    data, out_dir = Path(data), Path(out_dir)
    cfg = load_config(config)
    if cfg.get("modality", "speech") != "speech":  # text and visual read their own tables
        from etser.features import extract_modal

        return extract_modal.run_job(cfg, data, out_dir, nj, job, ngpu, num_threads, prefetch_depth, upstream)
    wav = read_table(data / "wav.scp", allow_empty_value=False)
    keys = sorted(wav, key=c_sort_key)
    part = split_keys(keys, nj)[job - 1]
    split = out_dir / f"split{nj}"
    split.mkdir(parents=True, exist_ok=True)
    marker = split / f"done.{job}"
    job_id = _job_id(config_hash(cfg), part, wav)
    old = _read_marker(marker)
    if old.get("job_id") == job_id:
        print(f"extract job {job}/{nj}: already done ({marker}), skipped", file=sys.stderr)
        return old
    marker.unlink(missing_ok=True)
    # The merged tables point into this job's arks, which are about to be replaced: the set is incomplete.
    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)

    import torch
    from tqdm import tqdm

    if ngpu > 0:
        if not torch.cuda.is_available():
            raise RuntimeError(f"--ngpu {ngpu} but CUDA is not available to this job (torch {torch.__version__})")
        device = "cuda"
    else:
        device = "cpu"
    t0 = time.time()
    if upstream is None:
        upstream = build_upstream(cfg, device)
    dur = _durations(data, part, wav)
    order = sorted(part, key=lambda u: (-dur[u], c_sort_key(u)))  # longest first: memory trouble shows at once
    kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
    arks = job_arks(split, kinds, job)
    tmps = {k: p.with_name(p.name + ".tmp") for k, p in arks.items()}
    scp: dict[str, dict[str, str]] = {k: {} for k in kinds}
    num_frames: dict[str, int] = {}
    excluded: dict[str, str] = {}   # utt -> "file<TAB>reason" (on_bad_input: exclude)
    audio_s = 0.0
    where = lambda u: f"utterance {u} ({wav[u]})"  # noqa: E731
    fds = {k: open(p, "wb") for k, p in tmps.items()}
    info = {}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, num_threads))  # restored below: callers (tests, the benchmark) share the process
    got = None
    try:
        interactive = sys.stderr.isatty()
        # no bar in a job log (stderr not a terminal): its carriage-return updates would run into the warnings'
        # lines; the job ends with a summary line of figures instead
        bar = tqdm(total=len(order), unit="utt", file=sys.stderr, mininterval=0.5, disable=not interactive,
                   desc=f"extract {data.name} {job}/{nj}", dynamic_ncols=True)
        t_start = time.time()
        workers = (num_threads if device == "cuda" else 0) if num_workers is None else num_workers
        pairs = [(u, wav[u]) for u in order]
        from etser.features.loader import BadAudio, load_in_workers, load_utt, load_utt_or_reason

        lenient = cfg["on_bad_input"] == "exclude"
        load = load_utt_or_reason if lenient else load_utt
        if workers > 0:
            got = load_in_workers(pairs, load, workers, prefetch_depth, describe=lambda p: where(p[0]))
        else:
            got = prefetch(pairs, load if lenient else (lambda p: load_audio(p[1], p[0])), prefetch_depth)

        def readable(got):
            for p, w in got:
                if isinstance(w, BadAudio):  # on_bad_input: exclude: listed, never dropped silently
                    excluded[p[0]] = f"{p[1]}\t{w.reason}"
                    print(f"excluded: {p[0]}\t{w.reason}", file=sys.stderr)
                    bar.update(1)
                    continue
                yield p[0], w
        loaded = readable(got)
        for f in iter_features(upstream, loaded, where=where):
            if not info:
                info = {"num_layers": int(f.mean.shape[0]), "dim": int(f.mean.shape[1])}
            for kind, arr in (("pooled_mean", f.mean), ("pooled_std", f.std)):
                scp[kind][f.utt] = f"{arks[kind]}:{write_matrix(fds[kind], f.utt, arr)}"
            if f.frames is not None:
                pos = write_matrix(fds["frames"], f.utt, f.frames, cfg["frames"]["dtype"])
                scp["frames"][f.utt] = f"{arks['frames']}:{pos}"
            for fd in fds.values():  # what is done is on disk (cheap next to a forward pass)
                fd.flush()
            num_frames[f.utt] = f.num_frames
            audio_s += f.seconds
            bar.update(1)
        bar.close()
        elapsed = time.time() - t_start
    finally:
        if got is not None:  # stops the readers now (worker processes), not when garbage collected
            got.close()
        for fd in fds.values():
            fd.close()
        torch.set_num_threads(threads_before)
    for k in kinds:
        os.replace(tmps[k], arks[k])
        write_table(split / f"{k}.{job}.scp", scp[k])
    write_table(split / f"utt2num_frames.{job}", num_frames)
    write_table(split / f"excluded.{job}", excluded)
    layers = resolve_layers(cfg["frames"]["layers"], info["num_layers"]) if info else None
    result = {"job_id": job_id, "job": job, "nj": nj, "utts": len(part), "excluded": len(excluded),
              "audio_seconds": round(audio_s, 3),
              "stride": upstream.stride, "frame_layers": layers, "device": device, **info}
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, marker)
    rate = len(part) / elapsed if elapsed > 0 else float("inf")
    rtf = elapsed / audio_s if audio_s > 0 else 0.0
    print(f"extract {data} job {job}/{nj}: {len(part)} utts, {audio_s / 3600:.3f} h audio, {rate:.2f} utts/s, "
          f"RTF {rtf:.4f}, peak RSS {_peak_rss_mb():.0f} MB, {time.time() - t0:.1f} s with model loading",
          file=sys.stderr)
    return {**result, "elapsed_seconds": elapsed}


# ---------------------------------------------------------------- merge

def merge(config: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int,
          name: str | None = None) -> dict:
    """Join the jobs' tables into ``<dir>/*.scp``, ``utt2num_frames``, ``meta.json`` and ``upstream.yaml``.

    Fails, writing nothing, when a job is unfinished or the utterances differ from ``wav.scp``'s.
    """
    from etser.featset import SCHEMA_VERSION, write_meta
    from etser.features.upstream import config_hash, find_config, load_config, versions

    data, out_dir = Path(data), Path(out_dir)
    cfg = load_config(config)
    if cfg.get("modality", "speech") != "speech":
        from etser.features import extract_modal

        return extract_modal.merge(cfg, config, data, out_dir, nj, name)
    split = out_dir / f"split{nj}"
    wav = read_table(data / "wav.scp", allow_empty_value=False)
    keys = sorted(wav, key=c_sort_key)
    parts = split_keys(keys, nj)
    cfg_hash = config_hash(cfg)
    markers = finished_markers(split, [_job_id(cfg_hash, part, wav) for part in parts], out_dir)
    kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
    tables = {k: {} for k in kinds + ["utt2num_frames"]}
    excluded: dict[str, str] = {}
    for j in range(1, nj + 1):
        for k in kinds:
            tables[k].update(read_table(split / f"{k}.{j}.scp"))
        tables["utt2num_frames"].update(read_table(split / f"utt2num_frames.{j}"))
        if (split / f"excluded.{j}").is_file():
            excluded.update(read_table(split / f"excluded.{j}"))
    expected = [k for k in keys if k not in excluded]
    if not expected:
        raise RuntimeError(f"{out_dir}: every utterance of {data}/wav.scp was excluded (see {split}/excluded.*)")
    for k, t in tables.items():
        lacking = sorted(set(expected) - set(t), key=c_sort_key)
        extra = sorted(set(t) - set(expected), key=c_sort_key)
        if lacking or extra:
            raise RuntimeError(
                f"{split}/{k}.*: {len(lacking)} utterances of {data}/wav.scp missing"
                + (f" (first: {lacking[0]})" if lacking else "") + f", {len(extra)} not in it"
                + (f" (first: {extra[0]})" if extra else "") + "; rerun the stage with --overwrite true")
    shapes = {(m.get("num_layers"), m.get("dim"), m.get("stride")) for m in markers if m.get("num_layers")}
    if len(shapes) != 1:
        raise RuntimeError(f"{out_dir}: jobs disagree on (layers, dim, stride): {sorted(shapes, key=str)}")
    num_layers, dim, stride = shapes.pop()
    audio_s = sum(m["audio_seconds"] for m in markers)
    info = _informative(tables["pooled_mean"]) or _informative(tables["pooled_std"])
    if not info:
        print(f"warning: {out_dir}: pooled mean and std are the same for every utterance (the upstream normalises "
              "each utterance, e.g. S3PRL fbank/mfcc CMVN); use frame-level features or an upstream without "
              "per-utterance normalisation (fbank_no_cmvn)", file=sys.stderr)
    layers = next((m["frame_layers"] for m in markers if m.get("num_layers")), None)
    meta = {
        "upstream": name or (str(cfg["name"] or cfg["factory"]) if isinstance(config, dict)
                             else find_config(config).stem),
        "modality": "speech", "schema_version": SCHEMA_VERSION,
        "config_hash": cfg_hash,
        "inputs": table_identity(wav, keys, files=True),  # what the features were made from (etser.provenance)
        "num_layers": num_layers, "dim": dim,
        "frame_rate": 16000 / stride, "stride_samples": stride,
        "frame_layers": layers,
        "dtype": {"pooled": "float32", "frames": cfg["frames"]["dtype"] if layers is not None else None},
        "pooled": "time-mean and population time-std of each layer over the utterance's valid frames, (L, D)",
        "num_utts": len(expected), "num_excluded": len(excluded), "audio_hours": round(audio_s / 3600, 4),
        "data": str(data), "nj": nj, "devices": sorted({m["device"] for m in markers}),
        "pooled_stats_informative": bool(info),
        "versions": versions(),
        "config": cfg,
    }
    import yaml

    # A previous merge's pooled_mean.scp says "complete": gone before anything it vouches for is rewritten.
    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)
    utmp = out_dir / "upstream.yaml.tmp"  # the config itself, for inference: load_config() / build_upstream()
    utmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(utmp, out_dir / "upstream.yaml")
    meta = write_meta(out_dir, meta)  # the reader's own writer: required keys, modality, schema_version
    write_table(out_dir / "utt2num_frames", tables["utt2num_frames"])
    write_table(out_dir / "excluded", excluded)  # utt file<TAB>reason (on_bad_input: exclude); stages 3-4 skip them
    for k in [k for k in kinds if k != "pooled_mean"] + ["pooled_mean"]:  # pooled_mean.scp last: "complete"
        write_table(out_dir / f"{k}.scp", tables[k])
    print(f"merge {out_dir}: {len(expected)} utts from {nj} jobs"
          + (f" ({len(excluded)} excluded, see {out_dir}/excluded)" if excluded else "") + f", {audio_s / 3600:.3f} h audio, "
          f"{num_layers} layers x {dim} dims at {16000 / stride:g} frames/s", file=sys.stderr)
    return meta


# ---------------------------------------------------------------- provenance

def features_identity(config: str | os.PathLike | dict, data: str | os.PathLike) -> dict:
    """What a set's features are made from now: the upstream config and the input table of ``data`` (for files:
    their size and modification time; for the text baseline also its training text)."""
    from etser.features.upstream import config_hash, load_config

    cfg = load_config(config)
    data = Path(data)
    if cfg.get("modality", "speech") != "speech":
        from etser.features import extract_modal

        _, table = extract_modal.read_inputs(cfg, data)
        keys = sorted(table, key=c_sort_key)
        return {"config_hash": config_hash(cfg), "inputs": extract_modal.inputs_identity(cfg, table, keys)}
    wav = read_table(data / "wav.scp", allow_empty_value=False)
    return {"config_hash": config_hash(cfg), "inputs": table_identity(wav, sorted(wav, key=c_sort_key), files=True)}


def recorded_identity(set_dir: str | os.PathLike) -> dict | None:
    """The identity recorded by merge in ``meta.json`` (None when the set is incomplete or predates it)."""
    set_dir = Path(set_dir)
    if not (set_dir / "pooled_mean.scp").is_file():
        return None
    try:
        meta = json.loads((set_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "inputs" not in meta:
        return None
    return {"config_hash": meta.get("config_hash"), "inputs": meta["inputs"]}


def status(config: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike,
           on_change: str = "redo") -> list[str]:
    """[] when ``out_dir`` holds complete features of exactly what ``data`` holds now; otherwise why not (the
    caller reruns the jobs: those whose inputs did not change are skipped by their markers).
    ``on_change='refuse'``: a complete but out-of-date set raises provenance.StaleError naming the changes."""
    from etser import provenance

    out_dir = Path(out_dir)
    if not (out_dir / "pooled_mean.scp").is_file():
        return ["not extracted yet (or not complete)"]
    return provenance.check(f"features {out_dir}", recorded_identity(out_dir), features_identity(config, data),
                            on_change)


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etser.features.extract", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("job", "merge", "status"):
        p = sub.add_parser(cmd, help={"job": "extract one job's part", "merge": "join the jobs' outputs",
                                      "status": "exit 0 when the set is complete and made from what --data holds "
                                                "now, 1 (saying why) when it must be (re)extracted"}[cmd])
        p.add_argument("--config", required=True, help="conf/upstream/<name>.yaml (or a name in conf/upstream)")
        p.add_argument("--data", required=True, help="data directory with wav.scp (utt2dur used when present), text/text_raw "
                       "or video.scp (text and visual configs)")
        p.add_argument("--dir", required=True, help="output directory dump/<tag>/<set>")
        p.add_argument("--nj", type=int, default=1)
        if cmd == "job":
            p.add_argument("--job", type=int, default=1, help="1-based job index")
            p.add_argument("--ngpu", type=int, default=0, help="> 0: run on CUDA (error when absent)")
            p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads")
            p.add_argument("--num_workers", type=int, default=None,
                           help="audio decoding processes (default: --num_threads on CUDA, 0 = a thread on CPU)")
        elif cmd == "merge":
            p.add_argument("--name", default=None, help="upstream name for meta.json (default: config file stem)")
        else:
            p.add_argument("--on_change", default="redo", choices=("redo", "refuse"),
                           help="refuse: exit 2 naming what changed instead of 1 (redo)")
    args = parser.parse_args(argv)
    from etser.features.dumpio import NonFiniteFeatures
    from etser.provenance import StaleError
    from etser.features.upstream import UpstreamError

    try:
        if args.cmd == "status":
            changes = status(args.config, args.data, args.dir, args.on_change)
            if changes:
                print(f"{args.dir}: to be (re)extracted: {'; '.join(changes)}", file=sys.stderr)
            return 1 if changes else 0
        if args.cmd == "job":
            run_job(args.config, args.data, args.dir, args.nj, args.job, args.ngpu, args.num_threads,
                    num_workers=args.num_workers)
        else:
            merge(args.config, args.data, args.dir, args.nj, args.name)
    except StaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteFeatures as e:  # raised where the features are written, which knows no config
        print(f"error: upstream {args.config}: {e}", file=sys.stderr)
        return 1
    except (UpstreamError, AudioLoadError, RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 2 for text and visual upstreams: the same jobs, files and checks as speech (etser/extract.py).

``python -m etser.extract job|merge`` comes here when the config says ``modality: text`` or ``visual``.
Inputs: ``data/<set>/text_raw`` or ``text`` (the config's ``text_file``) and ``data/<set>/video.scp``.
Outputs, as for speech: ``pooled_mean.scp`` / ``pooled_std.scp`` ((L, D) float32 per utterance: the mean and
population std over tokens, frames or clips), optional ``frames.scp`` + ``utt2num_frames``, ``meta.json``
(with ``modality`` and ``schema_version`` 2) and ``upstream.yaml``; resumable jobs with ``done.<job>`` markers.

An utterance that cannot be read (empty transcript; mp4 missing, corrupt, without a video stream or decodable
frame; with ``face.no_face: exclude``, no face in any frame) is listed with its file and reason in
``<dir>/excluded`` (``uid<TAB>file<TAB>reason``) and counted in the job log, or stops the job with
``on_bad_input: fail``; so is a video lasting more than ``max_av_diff`` seconds longer or shorter than
its audio (``utt2dur``).  Videos with no face found that fall back to the full frame are listed in
``<dir>/no_face``, videos turned upright by their rotation metadata in ``<dir>/rotated``; transcripts cut by ``long_text.policy: truncate`` in ``<dir>/truncated`` (dropped tokens).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from etser.datadir import c_sort_key, read_table, write_table
from etser.provenance import file_identity, table_identity
from etser.featset import SCHEMA_VERSION, write_meta
from etser.dumpio import (_informative, _peak_rss_mb, _read_marker, finished_markers, job_arks, prefetch,
                          resolve_layers, split_keys, write_matrix)
from etser.upstream import config_hash, find_config, modality, versions
from etser.video import VideoError

LISTS = ("excluded", "no_face", "truncated", "rotated")  # per-job tables joined by merge


@dataclass
class BadInput:
    reason: str


def input_file(cfg: dict, data: Path) -> Path:
    return data / (cfg["text_file"] if modality(cfg) == "text" else "video.scp")


def read_inputs(cfg: dict, data: Path) -> tuple[Path, dict[str, str]]:
    """The config's input table of a data directory: utt -> transcript (may be empty) or mp4 path."""
    path = input_file(cfg, data)
    if not path.is_file():
        made_by = "stage 1" if path.name != "text_raw" else "stage 1 (or set text_file: text in the config)"
        raise FileNotFoundError(f"{path}: not found; the {modality(cfg)} upstream reads it ({made_by} writes it)")
    return path, read_table(path, allow_empty_value=modality(cfg) == "text")


def _fit_digest(cfg: dict) -> str:
    """What else decides the features: the training transcripts of the n-gram baseline."""
    if cfg.get("name") == "char_ngram":
        p = Path(cfg["args"].get("fit_text", "data/train/text"))
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"
    return ""


def _job_id(cfg: dict, part: list[str], table: dict[str, str]) -> str:
    """The config, the fitted transform's training text, the utterances and their inputs: transcripts as they
    are, videos by path and file identity (size and modification time: a video replaced in place is redone)."""
    files = modality(cfg) != "text"
    h = hashlib.sha256((config_hash(cfg) + _fit_digest(cfg)).encode())
    for utt in part:
        ident = f" {file_identity(table[utt])}" if files else ""
        h.update(f"\n{utt} {table[utt]}{ident}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def inputs_identity(cfg: dict, table: dict[str, str], keys: list[str]) -> dict:
    """meta.json's ``inputs``: the input table (and for videos their files) plus the fitted transform's text."""
    ident = table_identity(table, keys, files=modality(cfg) != "text")
    fit = _fit_digest(cfg)
    return {**ident, "fit": fit} if fit else ident


def _build(cfg: dict, device: str):
    if modality(cfg) == "text":
        from etser.text_encoders import build_text_encoder

        return build_text_encoder(cfg, device)
    from etser.visual_encoders import build_visual_encoder

    return build_visual_encoder(cfg, device)


def _loader(cfg: dict, encoder, table: dict[str, str], src: Path, audio_seconds: dict[str, float] | None = None,
            threads: int = 0):
    """utt -> (prepared item, notes) or BadInput; runs in the prefetch thread.  Any other error is raised
    naming the utterance and its file.  ``audio_seconds``: utt2dur, against which video durations are
    checked; ``threads``: video decoder threads."""
    load = _bare_loader(cfg, encoder, table, audio_seconds or {}, threads)
    where = (lambda u: f"utterance {u} ({src})") if modality(cfg) == "text" else (lambda u: f"utterance {u} ({table[u]})")

    def guarded(utt):
        try:
            return load(utt)
        except Exception as e:  # e.g. a tokenizer or image processor failing on this input
            raise RuntimeError(f"{where(utt)}: preparing the input failed: {type(e).__name__}: {e}") from e
    return guarded


def _bare_loader(cfg: dict, encoder, table: dict[str, str], audio_seconds: dict[str, float], threads: int):
    if modality(cfg) == "text":
        from etser.text_encoders import TextError

        def load(utt):
            text = table[utt]
            if not text.strip():
                return BadInput("empty transcript")
            try:
                item = encoder.prepare(text)
            except TextError as e:
                return BadInput(f"unusable transcript: {e}")
            return item, {"truncated": getattr(item, "truncated", 0), "windows": len(getattr(item, "windows", [1]))}
        return load

    from etser.video import HaarFaces, duration, load_faces

    face, tolerance = cfg["face"], cfg.get("max_av_diff")
    detector = HaarFaces(face["margin"], face["min_size"], face["detect_size"]) if face["crop"] == "haar" else None

    def load(utt):
        notes: dict = {}
        try:
            if tolerance is not None and utt in audio_seconds:
                seconds = duration(table[utt])
                if seconds is not None and abs(seconds - audio_seconds[utt]) > float(tolerance):
                    return BadInput(f"audio/video mismatch: the video lasts {seconds:.2f} s, the audio "
                                    f"{audio_seconds[utt]:.2f} s (max_av_diff: {float(tolerance):g} s)")
            frames, found = load_faces(table[utt], utt, cfg["sampling"], face, detector, notes, threads)
        except VideoError as e:
            return BadInput(f"unreadable video: {e}")
        if not found and face["no_face"] == "exclude":
            return BadInput(f"no face: no face found in any of {len(frames)} sampled frames (face.no_face: exclude)")
        return encoder.prepare(frames), {"no_face": 0 if found else len(frames), "rotated": notes.get("rotation", 0)}
    return load


def _audio_seconds(path: Path) -> dict[str, float]:
    """utt2dur (stage 1 writes it) as numbers; {} without one (video durations then go unchecked)."""
    if not path.is_file():
        return {}
    out = {}
    for utt, v in read_table(path).items():
        try:
            out[utt] = float(v)
        except ValueError:
            raise RuntimeError(f"{path}: utterance {utt}: duration {v!r} is not a number") from None
    return out


def _pool(x, layers):
    """(L, T, D) tensor -> mean, population std (float32 (L, D)) and optional frames (T, k * D)."""
    x64 = x.double()
    mean, std = x64.mean(dim=1), x64.std(dim=1, correction=0)
    frames = None
    if layers is not None:
        frames = x[layers].permute(1, 0, 2).reshape(x.shape[1], -1).float().numpy()
    return mean.float().numpy(), std.float().numpy(), frames


def _pieces(encoder, item, max_items: int) -> list:
    """A long video split along its first axis so that no forward sees more than max_items frames."""
    n = encoder.size(item)
    if n <= max_items or not hasattr(item, "shape") or item.shape[0] < 2:
        return [item]
    step = max(1, max_items * item.shape[0] // n)
    return [item[i:i + step] for i in range(0, item.shape[0], step)]


def iter_encoded(cfg: dict, encoder, loaded):
    """``(utt, (L, T, D) tensor | BadInput, notes)`` in input order, batched by the config's limits."""
    import torch

    max_items = int(cfg["batch"]["max_items"])
    max_tokens = int(cfg["batch"].get("max_tokens") or 0)
    text = modality(cfg) == "text"
    batch: list = []  # (utt, item, notes)

    def flush():
        if not batch:
            return
        if text:
            outs = encoder.encode([b[1] for b in batch])
        else:
            flat = [(i, p) for i, b in enumerate(batch) for p in _pieces(encoder, b[1], max_items)]
            outs_flat, group = [], []
            for entry in flat:  # pieces of many videos share a forward up to max_items frames
                if group and sum(encoder.size(p) for _, p in group) + encoder.size(entry[1]) > max_items:
                    outs_flat += encoder.encode([p for _, p in group])
                    group = []
                group.append(entry)
            outs_flat += encoder.encode([p for _, p in group])
            outs = [torch.cat([o for (i, _), o in zip(flat, outs_flat) if i == k], dim=1) for k in range(len(batch))]
        for (utt, _, notes), x in zip(batch, outs):
            yield utt, x, notes
        batch.clear()

    for utt, got in loaded:
        if isinstance(got, BadInput):
            yield from flush()
            yield utt, got, {}
            continue
        item, notes = got
        full = batch and (len(batch) >= max_items if text else
                          sum(encoder.size(b[1]) for b in batch) + encoder.size(item) > max_items)
        if text and batch and max_tokens and sum(encoder.size(b[1]) for b in batch) + encoder.size(item) > max_tokens:
            full = True
        if full:
            yield from flush()
        batch.append((utt, item, notes))
    yield from flush()


def run_job(cfg: dict, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int = 1, job: int = 1,
            ngpu: int = 0, num_threads: int = 1, prefetch_depth: int = 8, encoder=None) -> dict:
    """One job of a text or visual config (see etser.extract.run_job for the contract)."""
    import torch

    if not 1 <= job <= nj:
        raise ValueError(f"--job {job} outside 1..{nj}")
    data, out_dir = Path(data), Path(out_dir)
    src, table = read_inputs(cfg, data)
    keys = sorted(table, key=c_sort_key)
    part = split_keys(keys, nj)[job - 1]
    split = out_dir / f"split{nj}"
    split.mkdir(parents=True, exist_ok=True)
    marker = split / f"done.{job}"
    job_id = _job_id(cfg, part, table)
    old = _read_marker(marker)
    if old.get("job_id") == job_id:
        print(f"extract job {job}/{nj}: already done ({marker}), skipped", file=sys.stderr)
        return old
    marker.unlink(missing_ok=True)
    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)
    if ngpu > 0 and not torch.cuda.is_available():
        raise RuntimeError(f"--ngpu {ngpu} but CUDA is not available to this job (torch {torch.__version__})")
    device = "cuda" if ngpu > 0 else "cpu"
    t0 = time.time()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, num_threads))
    try:
        if encoder is None:
            encoder = _build(cfg, device)
        is_text = modality(cfg) == "text"
        # longest transcripts first (memory trouble shows at once); videos in table order
        order = sorted(part, key=lambda u: (-len(table[u]), c_sort_key(u))) if is_text else list(part)
        where = (lambda u: f"utterance {u} ({src})") if is_text else (lambda u: f"utterance {u} ({table[u]})")
        kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
        arks = job_arks(split, kinds, job)
        tmps = {k: p.with_name(p.name + ".tmp") for k, p in arks.items()}
        scp: dict[str, dict[str, str]] = {k: {} for k in kinds}
        lists: dict[str, dict[str, str]] = {k: {} for k in LISTS}
        num_frames: dict[str, int] = {}
        info: dict = {}
        layers = None
        windowed = 0
        fds = {k: open(p, "wb") for k, p in tmps.items()}
        t_start = time.time()
        try:
            # a prepared video is its frames' pixel tensors (~0.6 MB per 224 px frame): few of them ahead
            depth = prefetch_depth if is_text else min(prefetch_depth, 2)
            seconds = {} if is_text else _audio_seconds(data / "utt2dur")
            loaded = prefetch(order, _loader(cfg, encoder, table, src, seconds, num_threads), depth)
            for utt, x, notes in iter_encoded(cfg, encoder, loaded):
                file = str(src) if is_text else table[utt]
                if isinstance(x, BadInput):
                    if cfg["on_bad_input"] == "fail":
                        raise RuntimeError(f"{where(utt)}: {x.reason}")
                    lists["excluded"][utt] = f"{file}\t{x.reason}"
                    continue
                if x.dim() != 3 or x.shape[1] == 0:
                    raise RuntimeError(f"{where(utt)}: the encoder gave shape {tuple(x.shape)}, not (L, T>0, D)")
                if not info:
                    info = {"num_layers": int(x.shape[0]), "dim": int(x.shape[2])}
                    layers = resolve_layers(cfg["frames"]["layers"], info["num_layers"])
                mean, std, frames = _pool(x, layers)
                for kind, arr in (("pooled_mean", mean), ("pooled_std", std)):
                    scp[kind][utt] = f"{arks[kind]}:{write_matrix(fds[kind], utt, arr)}"
                if frames is not None:
                    scp["frames"][utt] = f"{arks['frames']}:{write_matrix(fds['frames'], utt, frames, cfg['frames']['dtype'])}"
                for fd in fds.values():
                    fd.flush()
                num_frames[utt] = int(x.shape[1])
                if notes.get("no_face"):
                    lists["no_face"][utt] = f"{file}\t{notes['no_face']}"
                if notes.get("rotated"):
                    lists["rotated"][utt] = f"{file}\t{notes['rotated']}"
                if notes.get("truncated"):
                    lists["truncated"][utt] = str(notes["truncated"])
                windowed += notes.get("windows", 1) > 1
        finally:
            for fd in fds.values():
                fd.close()
        elapsed = time.time() - t_start
    finally:
        torch.set_num_threads(threads_before)
    for k in kinds:
        os.replace(tmps[k], arks[k])
        write_table(split / f"{k}.{job}.scp", scp[k])
    write_table(split / f"utt2num_frames.{job}", num_frames)
    for k, rows in lists.items():
        write_table(split / f"{k}.{job}", rows)
    result = {"job_id": job_id, "job": job, "nj": nj, "utts": len(part), "modality": modality(cfg),
              "frame_layers": layers, "device": device, "excluded": len(lists["excluded"]),
              "no_face": len(lists["no_face"]), "truncated": len(lists["truncated"]), "windowed": windowed,
              "encoder": getattr(encoder, "info", {}), **info}
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, marker)
    done = len(num_frames)
    notes = [f"{len(lists['excluded'])} excluded (see {split}/excluded.{job})"]
    if is_text:
        notes.append(f"{len(lists['truncated'])} truncated, {windowed} windowed")
    else:
        notes.append(f"{len(lists['no_face'])} without a face (full frame)")
    for utt, row in sorted(lists["excluded"].items())[:20]:
        print(f"excluded: {utt}\t{row}", file=sys.stderr)
    print(f"extract {data} job {job}/{nj} ({modality(cfg)}): {done} utts, {', '.join(notes)}, "
          f"{done / elapsed if elapsed > 0 else float('inf'):.2f} utts/s, {sum(num_frames.values())} "
          f"{'tokens' if is_text else 'frames'}, peak RSS {_peak_rss_mb():.0f} MB, "
          f"{time.time() - t0:.1f} s with model loading", file=sys.stderr)
    return {**result, "elapsed_seconds": elapsed}


def merge(cfg: dict, config, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int,
          name: str | None = None) -> dict:
    """Join the jobs' tables (see etser.extract.merge); excluded utterances are listed, not missing."""
    data, out_dir = Path(data), Path(out_dir)
    split = out_dir / f"split{nj}"
    src, table = read_inputs(cfg, data)
    keys = sorted(table, key=c_sort_key)
    parts = split_keys(keys, nj)
    markers = finished_markers(split, [_job_id(cfg, part, table) for part in parts], out_dir)
    kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
    tables = {k: {} for k in kinds + ["utt2num_frames", *LISTS]}
    for j in range(1, nj + 1):
        for k in kinds:
            tables[k].update(read_table(split / f"{k}.{j}.scp"))
        for k in ["utt2num_frames", *LISTS]:
            tables[k].update(read_table(split / f"{k}.{j}"))
    excluded = set(tables["excluded"])
    expected = set(keys) - excluded
    for k in kinds + ["utt2num_frames"]:
        lacking, extra = sorted(expected - set(tables[k]), key=c_sort_key), sorted(set(tables[k]) - expected)
        if lacking or extra:
            raise RuntimeError(f"{split}/{k}.*: {len(lacking)} utterances of {src} missing"
                               + (f" (first: {lacking[0]})" if lacking else "") + f", {len(extra)} unexpected"
                               + (f" (first: {extra[0]})" if extra else "") + "; rerun the stage with --overwrite true")
    if not tables["pooled_mean"]:
        raise RuntimeError(f"{out_dir}: every utterance of {src} was excluded (see {split}/excluded.*)")
    shapes = {(m.get("num_layers"), m.get("dim")) for m in markers if m.get("num_layers")}
    if len(shapes) != 1:
        raise RuntimeError(f"{out_dir}: jobs disagree on (layers, dim): {sorted(shapes, key=str)}")
    num_layers, dim = shapes.pop()
    layers = next((m["frame_layers"] for m in markers if m.get("num_layers")), None)
    mod = modality(cfg)
    fps = cfg["sampling"]["value"] if mod == "visual" and cfg["sampling"]["mode"] == "fps" else None
    axis = "tokens" if mod == "text" else ("clips" if cfg.get("name") == "hf_video" else "frames")
    info = _informative(tables["pooled_mean"]) or _informative(tables["pooled_std"])
    meta = {
        "upstream": name or (str(cfg["name"] or cfg["factory"]) if isinstance(config, dict)
                             else find_config(config).stem),
        "modality": mod, "schema_version": SCHEMA_VERSION,
        "config_hash": config_hash(cfg),
        "inputs": inputs_identity(cfg, table, keys),  # what the features were made from (etser.provenance)
        "num_layers": num_layers, "dim": dim,
        "time_axis": axis, "frame_rate": fps, "stride_samples": None,
        "frame_layers": layers,
        "dtype": {"pooled": "float32", "frames": cfg["frames"]["dtype"] if layers is not None else None},
        "pooled": f"mean and population std of each layer over the utterance's {axis}, (L, D)",
        "input": str(src),
        "num_utts": len(tables["pooled_mean"]), "num_excluded": len(excluded),
        "num_no_face": len(tables["no_face"]), "num_rotated": len(tables["rotated"]), "num_truncated": len(tables["truncated"]),
        "encoder": markers[0].get("encoder", {}),
        "data": str(data), "nj": nj, "devices": sorted({m["device"] for m in markers}),
        "pooled_stats_informative": bool(info),
        "versions": versions(),
        "config": cfg,
    }
    import yaml

    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)
    utmp = out_dir / "upstream.yaml.tmp"
    utmp.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    os.replace(utmp, out_dir / "upstream.yaml")
    meta = write_meta(out_dir, meta)
    for k in LISTS:
        write_table(out_dir / k, tables[k])
    write_table(out_dir / "utt2num_frames", tables["utt2num_frames"])
    for k in [k for k in kinds if k != "pooled_mean"] + ["pooled_mean"]:
        write_table(out_dir / f"{k}.scp", tables[k])
    print(f"merge {out_dir}: {len(tables['pooled_mean'])} utts from {nj} jobs ({len(excluded)} excluded, see "
          f"{out_dir}/excluded), {num_layers} layers x {dim} dims over {axis}", file=sys.stderr)
    return meta


def encode_table(cfg: dict, table: dict[str, str], frame_layers: list[int] | None = None, device: str = "cpu",
                 audio_seconds: dict[str, float] | None = None):
    """In-memory features of ``{utt: transcript or video path}`` (what inference calls; nothing is written):
    ``(utt, (mean, std, frames) | BadInput)`` in input order, each input read, checked and encoded exactly as
    a stage-2 job does; ``frames`` holds ``frame_layers`` (None: no frames)."""
    encoder = _build(cfg, device)
    where = (lambda u: f"utterance {u}") if modality(cfg) == "text" else (lambda u: f"utterance {u} ({table[u]})")
    loaded = prefetch(list(table), _loader(cfg, encoder, table, Path("<transcripts>"), audio_seconds or {}), 2)
    for utt, x, _ in iter_encoded(cfg, encoder, loaded):
        if not isinstance(x, BadInput) and (x.dim() != 3 or x.shape[1] == 0):
            raise RuntimeError(f"{where(utt)}: the encoder gave shape {tuple(x.shape)}, not (L, T>0, D)")
        yield utt, x if isinstance(x, BadInput) else _pool(x, frame_layers)

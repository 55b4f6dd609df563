"""Stage 2: features of a data directory into Kaldi ark/scp (docs/DESIGN.md, dump/<tag>/<set>/), for every
modality: the one job runner.

What differs between modalities (the input table, what of it enters the dump's identity, the model, how an
utterance becomes pooled statistics) is the modality's own file (etser/features/modalities/, looked up by the
config's ``modality`` in etser.features.modality); this module knows none of them by name.

Outputs per set: ``pooled_mean.scp`` / ``pooled_std.scp`` ((L, D) float32 per utterance: the mean and
population std over frames, tokens or clips), optional ``frames.scp`` + ``utt2num_frames``, ``meta.json`` and
``upstream.yaml`` (the config itself), ``excluded`` (``uid<TAB>file<TAB>reason``) and the modality's other
per-utterance tables (e.g. ``no_face``, ``truncated``, ``rotated``).  One job handles one contiguous block of
the sorted input table (the same block for the same ``--nj``); ``merge`` joins the jobs' tables::

    python -m etser.features.extract job   --config conf/upstream/X.yaml --data data/train --dir dump/<tag>/train \\
                                           --nj 4 --job 1 [--ngpu 0] [--num_threads 1]
    python -m etser.features.extract merge --config conf/upstream/X.yaml --data data/train --dir dump/<tag>/train --nj 4
    python -m etser.features.extract status --config ... --data ... --dir ...

A job writes ``<dir>/split<nj>/*.<job>.ark.tmp``, renames the arks when it is through, writes its scp
tables and last its marker ``done.<job>``; a job whose marker matches its utterances, their inputs and the
config is skipped, any other is redone from the start.  ``merge`` writes ``pooled_mean.scp`` last, so that
file exists only when the set is complete.  An input that cannot be used is listed in ``excluded`` with its
file and reason (``on_bad_input: exclude``) or stops the job naming the utterance (``fail``); a non-finite
feature always stops it (etser.features.dumpio.write_matrix).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from etser.datadir import c_sort_key, read_table, write_table
from etser.features import modality as modalities
from etser.features.dumpio import (_informative, _peak_rss_mb, _read_marker, finished_markers, job_arks,
                                   resolve_layers, split_keys, write_matrix)
from etser.features.modalities.speech import extract_wavs, iter_features, pooled_features  # noqa: F401 (inference)
from etser.provenance import file_identity, table_identity

EXCLUDED = "excluded"
SHOWN_EXCLUDED = 20  # excluded utterances named in a job's log (all are in its table)


# ---------------------------------------------------------------- identity

def _job_id(mod, cfg: dict, part: list[str], table: dict[str, str]) -> str:
    """What a job's output depends on: the config, what else the modality says decides the features, the
    utterances and their inputs (for files, their size and modification time: a file replaced in place redoes
    the job that read it)."""
    from etser.features.upstream import config_hash

    h = hashlib.sha256((config_hash(cfg) + mod.fit_digest(cfg)).encode())
    for utt in part:
        ident = f" {file_identity(table[utt])}" if mod.files else ""
        h.update(f"\n{utt} {table[utt]}{ident}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def inputs_identity(mod, cfg: dict, table: dict[str, str], keys: list[str]) -> dict:
    """meta.json's ``inputs``: the input table (and for files their identity) plus what else decides the features."""
    ident = table_identity(table, keys, files=mod.files)
    fit = mod.fit_digest(cfg)
    return {**ident, "fit": fit} if fit else ident


def input_file(cfg: dict, data: str | os.PathLike) -> Path:
    """The data dir's table a config's features are made from (``wav.scp``, ``text_raw``, ``video.scp``, ...)."""
    return modalities.of(cfg).input_file(cfg, Path(data))


def encode_table(cfg: dict, table: dict[str, str], frame_layers: list[int] | None = None, device: str = "cpu",
                 data: str | os.PathLike = ".") -> Iterator[tuple[str, object]]:
    """In-memory features of ``{utt: input}`` (a transcript, a video path, ...: the config's modality's input
    table), what inference calls; nothing is written: ``(utt, Pooled | BadInput)`` in input order, each input
    read, checked and encoded exactly as a stage-2 job does; frames hold ``frame_layers`` (None: no frames).
    ``data``: the data dir whose side tables the modality may read (e.g. utt2dur)."""
    import copy

    cfg = copy.deepcopy(cfg)
    cfg["frames"]["layers"] = frame_layers
    mod = modalities.of(cfg)
    src = Path("<inputs>")
    job = modalities.Job(Path(data), src, table, list(table), lambda u: mod.where(u, src, table), device, 1, None, 2)
    for utt, got, _ in mod.features(cfg, mod.build(cfg, device), job):
        yield utt, got


# ---------------------------------------------------------------- one job

def run_job(config: str | os.PathLike | dict, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int = 1,
            job: int = 1, ngpu: int = 0, num_threads: int = 1, prefetch_depth: int = 8, upstream=None,
            num_workers: int | None = None) -> dict:
    """Extract the features of job ``job`` of ``nj``; returns its marker dict (also when skipped).

    ``num_workers``: processes that read inputs ahead of the model where the modality uses them (speech:
    decoding and resampling); None: the modality's choice.  ``upstream``: an already built model of this
    config (the benchmarks reuse one); the returned dict then also holds ``elapsed_seconds``, the time of the
    extraction loop (reading, forward, writing).
    """
    from etser.features.upstream import load_config

    if not 1 <= job <= nj:
        raise ValueError(f"--job {job} outside 1..{nj}")
    data, out_dir = Path(data), Path(out_dir)
    cfg = load_config(config)
    mod = modalities.of(cfg)
    src, table = mod.read_inputs(cfg, data)
    keys = sorted(table, key=c_sort_key)
    part = split_keys(keys, nj)[job - 1]
    split = out_dir / f"split{nj}"
    split.mkdir(parents=True, exist_ok=True)
    marker = split / f"done.{job}"
    job_id = _job_id(mod, cfg, part, table)
    old = _read_marker(marker)
    if old.get("job_id") == job_id:
        print(f"extract job {job}/{nj}: already done ({marker}), skipped", file=sys.stderr)
        return old
    marker.unlink(missing_ok=True)
    # The merged tables point into this job's arks, which are about to be replaced: the set is incomplete.
    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)

    import torch
    from tqdm import tqdm

    if ngpu > 0 and not torch.cuda.is_available():
        raise RuntimeError(f"--ngpu {ngpu} but CUDA is not available to this job (torch {torch.__version__})")
    device = "cuda" if ngpu > 0 else "cpu"
    t0 = time.time()
    where = lambda u: mod.where(u, src, table)  # noqa: E731
    kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
    arks = job_arks(split, kinds, job)
    tmps = {k: p.with_name(p.name + ".tmp") for k, p in arks.items()}
    scp: dict[str, dict[str, str]] = {k: {} for k in kinds}
    lists: dict[str, dict[str, str]] = {k: {} for k in (EXCLUDED, *mod.notes)}
    num_frames: dict[str, int] = {}
    info: dict = {}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, num_threads))  # restored below: callers (tests, the benchmarks) share the process
    try:
        if upstream is None:
            upstream = mod.build(cfg, device)
        run = modalities.Job(data, src, table, mod.order(cfg, part, table, data), where, device, num_threads,
                             num_workers, prefetch_depth)
        # no bar in a job log (stderr not a terminal): its carriage-return updates would run into the warnings'
        # lines; the job ends with a summary line of figures instead
        bar = tqdm(total=len(part), unit="utt", file=sys.stderr, mininterval=0.5, disable=not sys.stderr.isatty(),
                   desc=f"extract {data.name} {job}/{nj}", dynamic_ncols=True)
        fds = {k: open(p, "wb") for k, p in tmps.items()}
        t_start = time.time()
        got = mod.features(cfg, upstream, run)
        try:
            for utt, f, notes in got:
                bar.update(1)
                file = table[utt] if mod.files else str(src)
                if isinstance(f, modalities.BadInput):
                    if cfg["on_bad_input"] == "fail":
                        raise RuntimeError(f"{where(utt)}: {f.reason}")
                    lists[EXCLUDED][utt] = f"{file}\t{f.reason}"
                    if len(lists[EXCLUDED]) <= SHOWN_EXCLUDED:
                        print(f"excluded: {utt}\t{f.reason}", file=sys.stderr)
                    continue
                if not info:
                    info = {"num_layers": int(f.mean.shape[0]), "dim": int(f.mean.shape[1])}
                for kind, arr in (("pooled_mean", f.mean), ("pooled_std", f.std)):
                    scp[kind][utt] = f"{arks[kind]}:{write_matrix(fds[kind], utt, arr)}"
                if f.frames is not None:
                    pos = write_matrix(fds["frames"], utt, f.frames, cfg["frames"]["dtype"])
                    scp["frames"][utt] = f"{arks['frames']}:{pos}"
                for fd in fds.values():  # what is done is on disk (cheap next to a forward pass)
                    fd.flush()
                num_frames[utt] = int(f.num_frames)
                for k in mod.notes:
                    if notes.get(k):
                        lists[k][utt] = f"{file}\t{notes[k]}" if mod.files else str(notes[k])
        finally:
            got.close()
            for fd in fds.values():
                fd.close()
            bar.close()
        elapsed = time.time() - t_start
    finally:
        torch.set_num_threads(threads_before)
    for k in kinds:
        os.replace(tmps[k], arks[k])
        write_table(split / f"{k}.{job}.scp", scp[k])
    write_table(split / f"utt2num_frames.{job}", num_frames)
    for k, rows in lists.items():
        write_table(split / f"{k}.{job}", rows)
    layers = resolve_layers(cfg["frames"]["layers"], info["num_layers"]) if info else None
    result = {"job_id": job_id, "job": job, "nj": nj, "utts": len(part), "modality": mod.name,
              "frame_layers": layers, "device": device, **{k: len(v) for k, v in lists.items()}, **run.stats, **info}
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, marker)
    done = len(num_frames)
    pieces = [f"{len(lists[EXCLUDED])} excluded (see {split}/{EXCLUDED}.{job})",
              *mod.summary({**run.stats, "elapsed_seconds": elapsed}, lists)]
    print(f"extract {data} job {job}/{nj} ({mod.name}): {done} utts, {', '.join(pieces)}, "
          f"{done / elapsed if elapsed > 0 else float('inf'):.2f} utts/s, {sum(num_frames.values())} {mod.axis(cfg)}, "
          f"peak RSS {_peak_rss_mb():.0f} MB, {time.time() - t0:.1f} s with model loading", file=sys.stderr)
    return {**result, "elapsed_seconds": elapsed}


# ---------------------------------------------------------------- merge

def merge(config: str | os.PathLike | dict, data: str | os.PathLike, out_dir: str | os.PathLike, nj: int,
          name: str | None = None) -> dict:
    """Join the jobs' tables into ``<dir>/*.scp``, ``utt2num_frames``, the per-utterance tables, ``meta.json``
    and ``upstream.yaml``.  Fails, writing nothing, when a job is unfinished or the utterances differ from the
    input table's (excluded ones are listed, not missing)."""
    import yaml

    from etser.featset import SCHEMA_VERSION, write_meta
    from etser.features.upstream import config_hash, find_config, load_config, versions

    data, out_dir = Path(data), Path(out_dir)
    cfg = load_config(config)
    mod = modalities.of(cfg)
    split = out_dir / f"split{nj}"
    src, table = mod.read_inputs(cfg, data)
    keys = sorted(table, key=c_sort_key)
    parts = split_keys(keys, nj)
    markers = finished_markers(split, [_job_id(mod, cfg, part, table) for part in parts], out_dir)
    kinds = ["pooled_mean", "pooled_std"] + (["frames"] if cfg["frames"]["layers"] is not None else [])
    lists = (EXCLUDED, *mod.notes)
    tables: dict[str, dict[str, str]] = {k: {} for k in kinds + ["utt2num_frames", *lists]}
    for j in range(1, nj + 1):
        for k in kinds:
            tables[k].update(read_table(split / f"{k}.{j}.scp"))
        for k in ["utt2num_frames", *lists]:
            if k == "utt2num_frames" or (split / f"{k}.{j}").is_file():
                tables[k].update(read_table(split / f"{k}.{j}"))
    excluded = tables[EXCLUDED]
    expected = [k for k in keys if k not in excluded]
    if not expected:
        raise RuntimeError(f"{out_dir}: every utterance of {src} was excluded (see {split}/{EXCLUDED}.*)")
    for k in kinds + ["utt2num_frames"]:
        lacking = sorted(set(expected) - set(tables[k]), key=c_sort_key)
        extra = sorted(set(tables[k]) - set(expected), key=c_sort_key)
        if lacking or extra:
            raise RuntimeError(
                f"{split}/{k}.*: {len(lacking)} utterances of {src} missing"
                + (f" (first: {lacking[0]})" if lacking else "") + f", {len(extra)} not in it"
                + (f" (first: {extra[0]})" if extra else "") + "; rerun the stage with --overwrite true")
    shapes = {(m.get("num_layers"), m.get("dim"), m.get("stride")) for m in markers if m.get("num_layers")}
    if len(shapes) != 1:
        raise RuntimeError(f"{out_dir}: jobs disagree on (layers, dim, stride): {sorted(shapes, key=str)}")
    num_layers, dim, _ = shapes.pop()
    info = _informative(tables["pooled_mean"]) or _informative(tables["pooled_std"])
    if not info:
        print(f"warning: {out_dir}: pooled mean and std are the same for every utterance (the upstream normalises "
              "each utterance, e.g. S3PRL fbank/mfcc CMVN); use frame-level features or an upstream without "
              "per-utterance normalisation (fbank_no_cmvn)", file=sys.stderr)
    layers = next((m["frame_layers"] for m in markers if m.get("num_layers")), None)
    meta = {
        "upstream": name or (str(cfg.get("name") or cfg.get("factory")) if isinstance(config, dict)
                             else find_config(config).stem),
        "modality": mod.name, "schema_version": SCHEMA_VERSION,
        "config_hash": config_hash(cfg),
        "inputs": inputs_identity(mod, cfg, table, keys),  # what the features were made from (etser.provenance)
        "num_layers": num_layers, "dim": dim,
        "frame_layers": layers,
        "dtype": {"pooled": "float32", "frames": cfg["frames"]["dtype"] if layers is not None else None},
        **mod.meta(cfg, markers, tables, src),
        "num_utts": len(expected), "num_excluded": len(excluded),
        "data": str(data), "nj": nj, "devices": sorted({m["device"] for m in markers}),
        "pooled_stats_informative": bool(info),
        "versions": versions(),
        "config": cfg,
    }
    # A previous merge's pooled_mean.scp says "complete": gone before anything it vouches for is rewritten.
    (out_dir / "pooled_mean.scp").unlink(missing_ok=True)
    utmp = out_dir / "upstream.yaml.tmp"  # the config itself, for inference: load_config() / build_upstream()
    utmp.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    os.replace(utmp, out_dir / "upstream.yaml")
    meta = write_meta(out_dir, meta)  # the reader's own writer: required keys, modality, schema_version
    for k in lists:  # stages 3-4 leave the excluded utterances out, counted
        write_table(out_dir / k, tables[k])
    write_table(out_dir / "utt2num_frames", tables["utt2num_frames"])
    for k in [k for k in kinds if k != "pooled_mean"] + ["pooled_mean"]:  # pooled_mean.scp last: "complete"
        write_table(out_dir / f"{k}.scp", tables[k])
    print(f"merge {out_dir}: {len(expected)} utts from {nj} jobs ({len(excluded)} excluded, see {out_dir}/excluded), "
          f"{num_layers} layers x {dim} dims ({mod.name})", file=sys.stderr)
    return meta


# ---------------------------------------------------------------- provenance

def features_identity(config: str | os.PathLike | dict, data: str | os.PathLike) -> dict:
    """What a set's features are made from now: the config and the input table of ``data`` (for files: their
    size and modification time; for a fitted transform also its training text)."""
    from etser.features.upstream import config_hash, load_config

    cfg = load_config(config)
    mod = modalities.of(cfg)
    _, table = mod.read_inputs(cfg, Path(data))
    return {"config_hash": config_hash(cfg), "inputs": inputs_identity(mod, cfg, table, sorted(table, key=c_sort_key))}


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
    except (UpstreamError, modalities.InputError, RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

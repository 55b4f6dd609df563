"""Pieces shared by stage 2's job runner (etser.features.extract) and the modalities
(etser/features/modalities/): layer selection, the background prefetch thread, ark writing, Kaldi-style job
splits, job markers and the "pooled statistics vary" check.  Below both, so neither imports the other for them."""

from __future__ import annotations

import json
import queue
import resource
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np


def resolve_layers(spec, num_layers: int) -> list[int] | None:
    """frames.layers (None, "all" or a list, negatives from the end) -> sorted layer indices."""
    if spec is None:
        return None
    if spec == "all":
        return list(range(num_layers))
    out = []
    for i in spec:
        if not -num_layers <= i < num_layers:
            raise ValueError(f"frames.layers: layer {i} out of range for {num_layers} layers")
        out.append(i % num_layers)
    return sorted(set(out))


def prefetch(items: Iterable, load: Callable, depth: int = 8) -> Iterator:
    """``(item, load(item))`` for each item, loaded in a background thread ``depth`` items ahead.

    Decoding and resampling release the GIL, so they overlap with the model's forward pass.  An exception
    in ``load`` (or in iterating ``items``) is raised here, in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, load(item), None))
        except BaseException as e:  # from load or from items itself: handed to the consumer, which raises it
            q.put((None, None, e))
        finally:
            q.put(done)

    thread = threading.Thread(target=worker, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is done:
                return
            item, value, err = got
            if err is not None:
                raise err
            yield item, value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class NonFiniteFeatures(ValueError):
    """A feature matrix with NaN or infinite values: never written to a dump."""


def write_matrix(fd, key: str, array: np.ndarray, dtype: str = "float32") -> int:
    """Append one ``key matrix`` record to an open binary ark; returns the scp offset of the matrix.
    Every stage-2 feature passes here: a non-finite one raises NonFiniteFeatures instead (also one that
    overflows float16)."""
    import kaldiio

    with np.errstate(over="ignore"):  # an overflow becomes inf, reported below
        stored = array.astype(np.float16 if dtype == "float16" else np.float32)
    bad = int(stored.size - np.count_nonzero(np.isfinite(stored)))
    if bad:
        raise NonFiniteFeatures(f"utterance {key}: {bad} of {stored.size} feature values are NaN or infinite "
                                f"({dtype}, not written to {fd.name}); the upstream model or its loading is "
                                "broken for this input")
    pos = fd.tell() + len((key + " ").encode("utf-8"))
    if dtype == "float16":  # kaldiio's numpy record (NPY): readable by kaldiio, not by Kaldi binaries
        kaldiio.save_ark(fd, {key: array.astype(np.float16)}, write_function="numpy")
    elif dtype == "kaldi_compressed":  # Kaldi's CompressedMatrix (kSpeechFeature), 1 byte per value
        kaldiio.save_ark(fd, {key: array.astype(np.float32)}, compression_method=2)
    else:
        kaldiio.save_ark(fd, {key: array.astype(np.float32)})
    return pos


def job_arks(split: Path, kinds: Iterable[str], job: int) -> dict[str, Path]:
    """The arks of one job, ``<split>/<kind>.<job>.ark``, as absolute paths: the scp entries that point into
    them read the same bytes from any working dir (a relative path would be read against the reader's)."""
    split = Path(split).resolve()
    return {k: split / f"{k}.{job}.ark" for k in kinds}


def split_keys(keys: list[str], nj: int) -> list[list[str]]:
    """Contiguous blocks as Kaldi's split_scp.pl (and utils/split_scp.py) cut them: the first len % nj
    blocks one key longer; with more jobs than keys the last blocks are empty."""
    base, extra = divmod(len(keys), nj)
    ends = [(j + 1) * base + min(j + 1, extra) for j in range(nj)]
    return [keys[end - base - (j < extra):end] for j, end in enumerate(ends)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _read_marker(path: Path) -> dict:
    """A job's ``done.<job>`` marker; {} when absent or unreadable (a job killed while writing it is unfinished)."""
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _informative(scp: dict[str, str], limit: int = 64) -> bool:
    """False when the pooled statistics are the same for every utterance (per-utterance CMVN upstreams).

    ``scp``: utterance -> ``ark:offset``, of which the first ``limit`` are read.
    """
    import kaldiio

    mats = [kaldiio.load_mat(v) for v in list(scp.values())[:limit]]
    if len(mats) < 2:
        return True
    return float(np.stack(mats).std(axis=0).max()) > 1e-2


def finished_markers(split: Path, job_ids: list[str], out_dir: Path) -> list[dict]:
    """The ``done.<job>`` markers of a split whose job ids are the expected ones (``job_ids[j-1]`` for job j);
    RuntimeError naming the unfinished jobs otherwise (merge writes nothing then)."""
    markers, missing = [], []
    for j, want in enumerate(job_ids, 1):
        m = _read_marker(split / f"done.{j}")
        (markers.append(m) if m.get("job_id") == want else missing.append(j))
    if missing:
        raise RuntimeError(f"{out_dir}: jobs {' '.join(map(str, missing))} of {len(job_ids)} are not finished "
                           f"(see {out_dir}/log/extract.<job>.log); rerun the stage to redo them")
    return markers

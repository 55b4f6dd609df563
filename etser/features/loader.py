"""Reading audio for stage 2 in worker processes, ahead of the model, in the model's order.

One thread decodes and resamples about 2,000-3,000 s of 44.1 kHz audio per second (torchaudio's sinc
resampler, 1.5 ms per 4.4 s utterance here; soundfile's decoding is cheaper): enough for a CPU forward, not
for a GPU that eats a corpus of 85,000 s in a minute or two.  ``load_in_workers`` runs ``load`` in
``num_workers`` processes and yields the results in input order,
``depth`` items ahead of the consumer, so host memory is bounded by ``depth`` utterances whatever the corpus
size.  Extraction feeds items sorted longest first, so consecutive results (and the batches built from them)
have similar lengths.  The workers are forked from a fresh ``forkserver`` process that has imported torch and
the audio code once (``spawn`` where forkserver does not exist): no CUDA or thread state of the parent is
forked, start-up is one import instead of one per worker, and the workers share the library pages.

Each worker runs single-threaded (torch, OpenMP, BLAS): ``num_workers`` processes use ``num_workers`` cores.
The same ``load`` function runs in the same way in a worker and in the parent, so results do not depend on
the number of workers (tests/test_loader.py checks features byte for byte).

Errors: an exception in ``load`` is raised in the consumer, in order, with the worker's traceback as its
cause (``AudioLoadError`` already names the utterance and file); a worker that dies (killed, out of memory,
a crash in a decoder library) raises RuntimeError naming the utterance being waited for; nothing hangs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def load_utt(item: tuple[str, str]):
    """``(utt, path)`` -> 16 kHz mono float32 waveform: the loader of extraction (picklable, importable)."""
    from etser.features.audio import load_audio

    utt, path = item
    return load_audio(path, utt)


class BadAudio:
    """What ``load_utt_or_reason`` gives for audio that cannot be read (picklable): the reason."""

    def __init__(self, reason: str):
        self.reason = reason


def load_utt_or_reason(item: tuple[str, str]):
    """Like ``load_utt``, but unreadable audio gives a ``BadAudio`` (stage 2's ``on_bad_input: exclude``)."""
    from etser.features.audio import AudioLoadError

    try:
        return load_utt(item)
    except AudioLoadError as e:
        return BadAudio(str(e))


def _init_worker(threads: int) -> None:
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def load_in_workers(items: Iterable, load: Callable = load_utt, num_workers: int = 2, depth: int | None = None,
                    describe: Callable[[object], str] = str, threads_per_worker: int = 1) -> Iterator:
    """``(item, load(item))`` for each item, computed in ``num_workers`` processes, yielded in input order.

    ``load`` must be picklable (a module-level function); ``depth`` (default 4 per worker) results are
    computed ahead.  ``describe(item)`` names an item in the error raised when a worker dies.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    depth = max(depth or 0, 4 * num_workers)
    items = iter(items)
    pool = ProcessPoolExecutor(max_workers=num_workers, mp_context=_context(),
                               initializer=_init_worker, initargs=(threads_per_worker,))
    pending: deque = deque()
    try:
        for item in items:
            try:
                fut = pool.submit(load, item)
            except BrokenProcessPool as e:
                # a worker died before this item could be queued: name the oldest item still waiting
                first = pending[0][0] if pending else item
                raise _worker_died(describe(first), max(len(pending) - 1, 0)) from e
            pending.append((item, fut))
            if len(pending) >= depth:
                yield _next(pending, describe)
        while pending:
            yield _next(pending, describe)
    finally:
        for _, fut in pending:
            fut.cancel()
        # Not waiting for the workers' exit (seconds of interpreter teardown): they end on their own.
        pool.shutdown(wait=False, cancel_futures=True)


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["etser.features.audio", "torch", "torchaudio.functional"])
    return ctx


def _next(pending: deque, describe: Callable[[object], str]):
    item, fut = pending.popleft()
    try:
        return item, fut.result()
    except BrokenProcessPool as e:
        raise _worker_died(describe(item), len(pending)) from e


def _worker_died(what: str, queued: int) -> RuntimeError:
    return RuntimeError(f"{what}: a decoding worker process died (killed, out of memory or a crash in the decoder) "
                        f"while this utterance or one of the {queued} queued after it was being loaded; rerun with "
                        "--num_workers 0 to find which file")

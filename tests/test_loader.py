"""Audio decoding in worker processes (etser/features/loader.py): same features as one thread, errors that name the
utterance and file, no hang when a worker dies, single-threaded workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etser.features.audio import AudioLoadError
from etser.features.extract import run_job
from etser.features.loader import load_in_workers, load_utt


# Module-level, so that the spawned workers can unpickle them (this directory is on their sys.path).
def _square(x: int) -> tuple[int, int]:
    time.sleep(0.01 * (x % 3))  # finish out of order
    return x * x, os.getpid()


def _die_on(x: int) -> int:
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _threads(_x: int) -> tuple[str, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS", ""), torch.get_num_threads()


def write_wavs(root: Path, n: int, bad: int | None = None) -> dict[str, str]:
    """``n`` 44.1 kHz stereo files of different lengths; ``bad``: that one holds garbage bytes."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    wav = {}
    for i in range(n):
        path = root / f"u{i:02d}.wav"
        if i == bad:
            path.write_bytes(b"RIFF not really a wave file")
        else:
            x = (0.1 * rng.standard_normal((int(44100 * (0.4 + 0.13 * i)), 2))).astype(np.float32)
            sf.write(path, x, 44100, subtype="PCM_16")
        wav[f"u{i:02d}"] = str(path)
    return wav


def data_dir(root: Path, wav: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav.items())))
    return root


def test_results_in_input_order_from_several_processes():
    got = list(load_in_workers(range(20), _square, num_workers=2, depth=3))
    assert [item for item, _ in got] == list(range(20))
    assert [v[0] for _, v in got] == [x * x for x in range(20)]
    pids = {v[1] for _, v in got}
    assert len(pids) == 2 and os.getpid() not in pids


def test_workers_are_single_threaded():
    got = list(load_in_workers(range(4), _threads, num_workers=2))
    assert {v for _, v in got} == {("1", 1)}


def test_dead_worker_raises_naming_the_utterance_without_hanging():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"utterance u\d+: a decoding worker process died"):
        for _ in load_in_workers(range(12), _die_on, num_workers=2, describe=lambda x: f"utterance u{x}"):
            pass
    assert time.monotonic() - t0 < 60


def _items_then_pause(n: int):
    yield 5                  # the worker dies on it
    time.sleep(3)            # ... before the next item is queued: the pool is broken when it is submitted
    yield from range(n)


def test_worker_dying_before_the_next_item_is_queued_is_named_too():
    # a worker death seen by the pool's submit (not by a result) gets the same message, naming the waiting item
    with pytest.raises(RuntimeError, match=r"utterance u5: a decoding worker process died"):
        for _ in load_in_workers(_items_then_pause(4), _die_on, num_workers=1, describe=lambda x: f"utterance u{x}"):
            pass


def test_decode_error_names_utterance_and_file(tmp_path):
    wav = write_wavs(tmp_path / "audio", 6, bad=3)
    items = sorted(wav.items())
    with pytest.raises(AudioLoadError, match=r"utterance u03 \(.*u03\.wav\): cannot decode audio"):
        for _ in load_in_workers(items, load_utt, num_workers=2):
            pass


def test_waveforms_equal_to_loading_in_this_process(tmp_path):
    wav = write_wavs(tmp_path / "audio", 5)
    items = sorted(wav.items())
    for (item, got), want in zip(load_in_workers(items, load_utt, num_workers=2), items):
        assert item == want
        ref = load_utt(want)
        assert got.dtype == np.float32 and got.tobytes() == ref.tobytes()


@pytest.fixture(scope="module")
def hubert_layer(tmp_path_factory):
    from helpers_models import tiny_hf_dir

    return tiny_hf_dir(tmp_path_factory.mktemp("model") / "hf_hubert_layer", "hubert", "layer")


def test_features_byte_identical_with_0_and_2_workers(tmp_path, hubert_layer):
    wav = write_wavs(tmp_path / "audio", 9)
    data = data_dir(tmp_path / "data", wav)
    cfg = {"name": "hf_hubert_custom", "ckpt": str(hubert_layer), "batch": {"policy": "padded", "max_items": 4}}
    arks = {}
    for workers in (0, 2):
        out = tmp_path / f"dump{workers}"
        marker = run_job(cfg, data, out, nj=1, job=1, num_workers=workers)
        assert marker["utts"] == 9
        arks[workers] = {k: (out / "split1" / f"{k}.1.ark").read_bytes() for k in ("pooled_mean", "pooled_std")}
    assert arks[0]["pooled_mean"] and arks[0] == arks[2]


def test_run_job_error_with_workers_names_the_file(tmp_path, hubert_layer):
    wav = write_wavs(tmp_path / "audio", 6, bad=2)
    data = data_dir(tmp_path / "data", wav)
    cfg = {"name": "hf_hubert_custom", "ckpt": str(hubert_layer), "batch": {"policy": "padded"}}
    with pytest.raises(AudioLoadError, match=r"utterance u02 \(.*u02\.wav\)"):
        run_job(cfg, data, tmp_path / "dump", num_workers=2)
    assert not (tmp_path / "dump" / "split1" / "done.1").exists()

"""etser.audio: any WAV -> 16 kHz mono float32, with errors that name the utterance and the file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from etser.features.audio import AudioLoadError, audio_seconds, load_audio


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_16k_mono_float_is_returned_as_is(tmp_path):
    x = _tone(16000, 0.5)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, x)


def test_stereo_44k_pcm16_is_averaged_and_resampled(tmp_path):
    left, right = _tone(44100, 1.0, 440), _tone(44100, 1.0, 1000)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 44100, subtype="PCM_16")
    y = load_audio(tmp_path / "s.wav", "S01-x")
    assert y.dtype == np.float32 and y.shape == (16000,)
    # The channel mean of two tones, resampled: compare with the same signal made at 16 kHz.
    ref = 0.5 * (_tone(16000, 1.0, 440) + _tone(16000, 1.0, 1000))
    inner = slice(200, -200)  # the resampling filter's edges
    assert np.abs(y[inner] - ref[inner]).max() < 2e-3
    assert audio_seconds(tmp_path / "s.wav") == pytest.approx(1.0)


def test_8k_upsampled_length(tmp_path):
    sf.write(tmp_path / "n.wav", _tone(8000, 0.25), 8000, subtype="PCM_16")
    assert load_audio(tmp_path / "n.wav").shape == (4000,)


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "nan", "pipe"])
def test_errors_name_utterance_and_file(tmp_path, case):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif case == "garbage":
        path.write_bytes(b"this is not audio at all" * 10)
    elif case == "nan":
        sf.write(path, np.array([0.0, np.nan, 0.1] * 100, np.float32), 16000, subtype="FLOAT")
    elif case == "pipe":
        path = "sox in.wav -t wav - |"
    with pytest.raises(AudioLoadError) as err:
        load_audio(path, "S07-G00001_02_07_001")
    msg = str(err.value)
    assert "S07-G00001_02_07_001" in msg and str(path) in msg


def test_special_file_is_never_opened(tmp_path):
    """A named pipe where a wav should be: opening it would wait for a writer forever."""
    import signal

    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)

    def fail(*_):
        raise TimeoutError("load_audio blocked on a named pipe")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    try:
        with pytest.raises(AudioLoadError, match=r"utterance S01-x \(.*fifo\.wav\): is a named pipe, not an audio"):
            load_audio(fifo, "S01-x")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_message_for_a_name_that_is_not_utf8_can_be_printed(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.wav")
    with pytest.raises(AudioLoadError) as err:
        load_audio(path, "S01-x")
    msg = str(err.value)
    assert "caf\\xe9.wav" in msg and msg.encode("utf-8")  # encodes: no surrogate escape left


_BOUNDED = r"""
import resource, sys, time
import numpy as np, soundfile as sf
import torch, torchaudio.functional, soxr  # imported before the limit
from etser.features.audio import load_audio
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
data_kb = int(status["VmData"].split()[0])
limit = (data_kb + 600 * 1024) * 1024  # 600 MB more than what the interpreter and torch hold
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
t = time.perf_counter()
y = load_audio(sys.argv[1], "S01-x")
print(y.shape[0], f"{time.perf_counter() - t:.3f}")
"""


@pytest.mark.parametrize("rate", [44101, 96001])
def test_prime_rate_is_resampled_in_bounded_memory_and_time(tmp_path, rate):
    """44101 -> 16000 Hz has no common divisor: torchaudio's sinc kernel would be 16000 x 44101 floats (2.8 GB)."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "odd.wav"
    sf.write(path, _tone(rate, 0.5, 440), rate, subtype="PCM_16")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _BOUNDED, str(path)], capture_output=True, text=True, timeout=120,
                       cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    assert r.returncode == 0, r.stderr[-2000:]
    n, seconds = r.stdout.split()
    assert int(n) == 8000 and float(seconds) < 5.0
    y = load_audio(path)
    inner = slice(200, -200)
    assert np.abs(y[inner] - _tone(16000, 0.5, 440)[inner]).max() < 2e-3


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_truncated_file_is_an_error_not_a_shorter_signal(tmp_path, fmt, subtype):
    """libsndfile shortens a cut-off WAV silently and an MP3 decoder stops early: stage 2 must not
    compute features of half an utterance."""
    import io

    buf = io.BytesIO()
    sf.write(buf, _tone(16000, 1.0), 16000, format=fmt, subtype=subtype)
    data = buf.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(AudioLoadError, match=r"utterance S01-x \(.*cut\.\w+\): (truncated|cannot decode)"):
        load_audio(path, "S01-x")
    path.write_bytes(data)
    assert load_audio(path, "S01-x").shape == (16000,)


def test_stereo_downmix_equals_the_channel_mean_bit_for_bit(tmp_path):
    """The fast two-channel downmix gives exactly numpy's float32 mean (features must not change)."""
    import numpy as np
    import soundfile as sf

    from etser.features.audio import load_audio

    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal((16000, 2))).astype(np.float32)
    p = tmp_path / "st.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    assert np.array_equal(load_audio(p), x.mean(axis=1, dtype=np.float32))

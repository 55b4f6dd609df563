"""etser.audio: any WAV -> 16 kHz mono float32, with errors that name the utterance and the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from etser.audio import AudioLoadError, audio_seconds, load_audio


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

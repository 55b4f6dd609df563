"""Reading audio for the upstream models: any WAV (or other libsndfile format) -> 16 kHz mono float32.

Stage 1 never copies audio (DESIGN.md), so this is where the release's 44.1 kHz (sometimes stereo) files
become what the models take.  Channels are averaged; resampling uses torchaudio's band-limited sinc
interpolation (torchaudio is pinned beside torch, so the same file gives the same samples everywhere)
when its kernel is small, i.e. when the two rates have a large common divisor (44.1 kHz, 48 kHz, 8 kHz ->
16 kHz). For rates such as 44101 Hz that kernel is (new / gcd) x (orig / gcd) taps: gigabytes and minutes;
soxr (installed with librosa) resamples those in bounded memory and time.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf

from etser.features.audio_info import not_a_regular_file, wav_data_bytes
from etser.features.modality import InputError
from etser.datadir import printable

TARGET_RATE = 16000
# Largest (new / gcd) x (orig / gcd) resampled with torchaudio (its kernel is about that many floats);
# above it soxr resamples. 44.1 kHz -> 16 kHz: 160 x 441.
_MAX_SINC_KERNEL = 1 << 20


class AudioLoadError(InputError):
    """An audio file that cannot be turned into model input; the message names the utterance and the file."""


def _where(path, utt: str | None) -> str:
    return f"utterance {utt} ({printable(path)})" if utt else printable(path)


def load_audio(path: str | os.PathLike, utt: str | None = None, rate: int = TARGET_RATE) -> np.ndarray:
    """Decode ``path`` and return a 1-D float32 array at ``rate`` Hz, channels averaged.

    Raises AudioLoadError naming ``utt`` and ``path`` for a missing, unreadable, truncated, empty or
    non-finite file, and for anything that is not a regular file (never opened).
    """
    path = os.fspath(path)
    if path.endswith("|"):
        raise AudioLoadError(f"{_where(path, utt)}: wav.scp pipe commands are not supported; "
                             "give the audio file's path")
    if not os.path.exists(path):
        raise AudioLoadError(f"{_where(path, utt)}: no such file")
    try:
        what = not_a_regular_file(path)  # a named pipe or device is never opened: reading it blocks
    except OSError as e:
        raise AudioLoadError(f"{_where(path, utt)}: {e.strerror or e}") from None
    if what:
        raise AudioLoadError(f"{_where(path, utt)}: is {what}, not an audio file")
    try:
        with sf.SoundFile(path) as f:
            frames, sr, fmt = f.frames, f.samplerate, f.format
            data = f.read(dtype="float32", always_2d=True)
        sizes = wav_data_bytes(path) if fmt in ("WAV", "WAVEX") else None
    except (RuntimeError, OSError, ValueError) as e:  # sf.LibsndfileError is a RuntimeError
        raise AudioLoadError(f"{_where(path, utt)}: cannot decode audio: {e}") from None
    # A cut-off file: libsndfile shortens a WAV to what it holds, an MP3 decoder stops early.
    if sizes is not None and sizes[0] > sizes[1]:
        raise AudioLoadError(f"{_where(path, utt)}: truncated: the WAV header declares {sizes[0]} bytes of samples "
                             f"but the file holds {sizes[1]}")
    if 0 < data.shape[0] < frames:
        raise AudioLoadError(f"{_where(path, utt)}: truncated: the header declares {frames} frames but only "
                             f"{data.shape[0]} can be decoded")
    if data.shape[0] == 0:
        raise AudioLoadError(f"{_where(path, utt)}: the file holds 0 samples")
    if data.shape[1] == 2:  # the release's stereo: the same bits as the mean, ~4x faster than mean(axis=1)
        wav = (data[:, 0] + data[:, 1]) * np.float32(0.5)
    else:
        wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wav).all():
        raise AudioLoadError(f"{_where(path, utt)}: samples contain NaN or infinity")
    if sr != rate:
        wav = resample(wav, sr, rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 array: torchaudio's default sinc filter, or soxr (HQ) where
    that filter's kernel would exceed _MAX_SINC_KERNEL elements (rates with a small common divisor)."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    g = math.gcd(orig_rate, new_rate)
    if (new_rate // g) * (orig_rate // g) > _MAX_SINC_KERNEL:
        import soxr

        return soxr.resample(np.ascontiguousarray(wav, dtype=np.float32), orig_rate, new_rate, quality="HQ")
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), int(orig_rate), int(new_rate))
    return out.numpy()


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration from the header without decoding (0.0 when the header cannot be read: load_audio says why)."""
    try:
        info = sf.info(os.fspath(path))
    except (RuntimeError, OSError, ValueError):
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0

"""Audio file headers: length, rate and channels without decoding the samples.

soundfile reads the header; a WAV whose ``data`` chunk declares more bytes than the file holds (a cut-off
download or copy) is reported as truncated, because libsndfile silently shortens such files instead.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import soundfile as sf


class AudioError(Exception):
    """An audio file that cannot be used; ``kind`` is a short category, the message says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    samplerate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate


def wav_data_bytes(path: str | os.PathLike) -> tuple[int, int] | None:
    """(bytes the RIFF ``data`` chunk declares, bytes the file holds after its header), or None.

    None where there is nothing to compare: not a RIFF/WAVE file, no ``data`` chunk, or a size left
    unset by a streaming writer (0 or 0xFFFFFFFF).
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                return chunk_size, size - pos - 8
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts of one audio file; AudioError for an unreadable, truncated or empty one."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as e:  # sf.LibsndfileError is a RuntimeError
        raise AudioError("unreadable audio", str(e)) from None
    if info.format in ("WAV", "WAVEX"):  # WAVEX: the WAVE_FORMAT_EXTENSIBLE header, same chunks
        try:
            sizes = wav_data_bytes(path)
        except OSError as e:
            raise AudioError("unreadable audio", str(e)) from None
        if sizes is not None and sizes[0] > sizes[1]:
            raise AudioError("truncated audio",
                             f"the WAV header declares {sizes[0]} bytes of samples but the file holds {sizes[1]}")
    if info.frames <= 0:
        raise AudioError("empty audio", "the file holds 0 samples")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))

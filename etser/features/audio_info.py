"""Audio file headers: length, rate and channels, checked with a cheap decode.

soundfile reads the header. The header can lie, so a file is also checked where that costs little:

- a WAV whose ``data`` chunk declares more bytes than the file holds (a cut-off download or copy) is
  truncated; libsndfile silently shortens such files instead;
- any other container (FLAC, OGG, MP3, ... also behind a ``.wav`` name) is truncated when its last frames,
  by the header's length, cannot be decoded (a seek near the end and a short read);
- float samples (FLAC cannot hold them, WAV and others can) are decoded in full and must be finite: a NaN
  or infinity poisons every feature computed from the file.

The path must be a regular file (a named pipe or device is never opened: reading one blocks or never ends)
and valid UTF-8 (Kaldi tables are UTF-8 text and cannot hold it otherwise).
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from etser.datadir import non_utf8_path

# Frames decoded at the end of a compressed file; a block of samples, not the whole file.
_TAIL_FRAMES = 4096
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
_FILE_TYPES = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


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


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """None for a regular file (symlinks followed); else what the path is, without opening it.

    Raises OSError when the path cannot be stat'ed (missing, a symlink loop, no permission).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _FILE_TYPES if test(mode)), "not a regular file")


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


def _check_tail(path: str, frames: int) -> None:
    """AudioError unless the last frames the header promises decode (a truncated stream fails here)."""
    want = min(frames, _TAIL_FRAMES)
    try:
        with sf.SoundFile(path) as f:
            f.seek(frames - want)
            got = f.read(want, dtype="float32", always_2d=True).shape[0]
    except (RuntimeError, OSError, ValueError) as e:  # sf.LibsndfileError is a RuntimeError
        raise AudioError("truncated audio", f"the header declares {frames} frames but the last of them cannot "
                         f"be decoded ({e})") from None
    if got < want:
        raise AudioError("truncated audio", f"the header declares {frames} frames but only "
                         f"{frames - want + got} can be decoded")


def _check_finite(path: str) -> None:
    """AudioError at the first block that holds NaN or infinity (float files only)."""
    try:
        with sf.SoundFile(path) as f:
            start = 0
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                bad = ~np.isfinite(block)
                if bad.any():
                    frame = start + int(np.flatnonzero(bad.any(axis=1))[0])
                    raise AudioError("bad samples", f"sample {frame} is {block[frame - start][bad[frame - start]][0]}"
                                     " (NaN or infinity in a float file)")
                start += block.shape[0]
    except (RuntimeError, OSError) as e:
        raise AudioError("unreadable audio", str(e)) from None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts of one audio file; AudioError for an unusable, unreadable, truncated, empty or non-finite one."""
    path = os.fspath(path)
    why = non_utf8_path(path)
    if why:
        raise AudioError("non-UTF-8 path", why)
    try:
        what = not_a_regular_file(path)
    except OSError as e:
        raise AudioError("unreadable audio", f"{e.strerror or e}") from None
    if what:
        raise AudioError("not a file", f"the path is {what}, not an audio file (not opened)")
    try:
        info = sf.info(path)
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
    if info.format not in ("WAV", "WAVEX"):
        _check_tail(path, int(info.frames))
    if info.subtype in _FLOAT_SUBTYPES:
        _check_finite(path)
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))

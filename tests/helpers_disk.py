"""A full disk, simulated: files a module opens for writing fail with ENOSPC after the first few."""

from __future__ import annotations

import builtins
import errno
import os


class _Full:
    """A file open for writing on a full disk: every write raises ENOSPC, as write(2) does."""

    def __init__(self, f):
        self.f = f

    def write(self, s):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk_after(monkeypatch, module, n_files: int) -> list:
    """Every file `module` opens for writing after its first n_files fails on its first write; returns the
    names (or descriptors) opened so far."""
    opened = []

    def fake_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        opened.append(file)
        return f if len(opened) <= n_files else _Full(f)

    monkeypatch.setattr(module, "open", fake_open, raising=False)
    return opened

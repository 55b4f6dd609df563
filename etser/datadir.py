"""Kaldi text tables and data directories.

A table is one ``key value`` per line; the value is the rest of the line after the first run of
whitespace (so paths with spaces survive in ``wav.scp``).  Files are sorted as ``LC_ALL=C sort`` sorts,
which for UTF-8 is the order of the encoded bytes, i.e. Python's code-point order of ``str``.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, Mapping

_SPLIT = re.compile(r"\s+")


def c_sort_key(key: str) -> bytes:
    """Sort key equal to ``LC_ALL=C sort`` on UTF-8 text."""
    return key.encode("utf-8")


def split_line(line: str) -> tuple[str, str]:
    """Key and value of one table line, split as read_table splits it (value = rest of the line)."""
    parts = _SPLIT.split(line.strip(), maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def read_table(path: str | os.PathLike, allow_empty_value: bool = True) -> dict[str, str]:
    """Read a Kaldi table into an insertion-ordered dict.

    Raises ValueError naming the file and line for a duplicate key or a line with no key.
    """
    path = Path(path)
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.endswith("\r"):
                line = line[:-1]
            if not line.strip():
                raise ValueError(f"{path}:{lineno}: empty line")
            key, value = split_line(line)
            if not value and not allow_empty_value:
                raise ValueError(f"{path}:{lineno}: key {key!r} has no value")
            if key in table:
                raise ValueError(f"{path}:{lineno}: duplicate key {key!r}")
            table[key] = value
    return table


def read_keys(path: str | os.PathLike) -> list[str]:
    """The first field of every line (a key list or any table)."""
    return list(read_table(path).keys())


def write_table(path: str | os.PathLike, items: Mapping[str, object] | Iterable[tuple[str, object]]) -> Path:
    """Write a table sorted in C order, atomically (temporary file, then rename)."""
    path = Path(path)
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    pairs.sort(key=lambda kv: c_sort_key(kv[0]))
    seen = set()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key, value in pairs:
            value = str(value)
            if not key or _SPLIT.search(key):
                raise ValueError(f"{path}: key {key!r} is empty or contains whitespace")
            if "\n" in value or "\r" in value:
                raise ValueError(f"{path}: value of {key!r} contains a newline")
            if key in seen:
                raise ValueError(f"{path}: duplicate key {key!r}")
            seen.add(key)
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
    os.replace(tmp, path)
    return path


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Speaker -> its utterances, both in C order."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk, key=c_sort_key):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt, key=c_sort_key)}


def contiguous_parts(sizes: list[int], n: int) -> list[int]:
    """Cut consecutive blocks of the given sizes (e.g. a speaker's lines) into n non-empty contiguous groups.

    Returns the end (exclusive block index) of each group. Each cut is the block boundary nearest to where
    Kaldi's split_scp.pl cuts lines (the first total % n parts one line longer), so for blocks of size 1 the
    parts are exactly Kaldi's.
    """
    m = len(sizes)
    if not 1 <= n <= m:
        raise ValueError(f"cannot make {n} non-empty parts from {m} blocks")
    cum = [0]
    for size in sizes:
        cum.append(cum[-1] + size)
    base, extra = divmod(cum[-1], n)
    ends, prev = [], 0
    for k in range(1, n):
        target = k * base + min(k, extra)
        lo, hi = prev + 1, m - (n - k)  # leave at least one block for each later group
        j = bisect_left(cum, target, lo, hi + 1)
        candidates = [x for x in (j - 1, j) if lo <= x <= hi]
        prev = min(candidates, key=lambda x: (abs(cum[x] - target), x))
        ends.append(prev)
    ends.append(m)
    return ends

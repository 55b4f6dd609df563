"""Kaldi text tables and data directories.

A table is one ``key value`` per line; the value is the rest of the line after the first run of
whitespace (so paths with spaces survive in ``wav.scp``).  Files are sorted as ``LC_ALL=C sort`` sorts,
which for UTF-8 is the order of the encoded bytes, i.e. Python's code-point order of ``str``.

Every file is written atomically (a temporary file in the same folder, then a rename; the temporary file
is removed when writing fails, e.g. on a full disk), and ``staged_dir`` does the same for a whole data
directory: a reader sees the previous complete set, the new complete set, or (for an instant) none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, Iterator, Mapping

_SPLIT = re.compile(r"\s+")


def c_sort_key(key: str) -> bytes:
    """Sort key equal to ``LC_ALL=C sort`` on UTF-8 text."""
    return key.encode("utf-8")


def printable(text: str | os.PathLike) -> str:
    """Text any UTF-8 writer accepts: a file name's undecodable bytes become ``\\xNN``, lone surrogates ``\\udNNN``.

    Python gives names that are not valid UTF-8 as str with surrogate escapes; writing those raises
    UnicodeEncodeError. Messages and exclusion lists quote paths through this.
    """
    text = os.fspath(text)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (e.g. from a JSON "\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def non_utf8_path(path: str | os.PathLike) -> str | None:
    """Why a path cannot go into a table (it is not valid UTF-8), or None when it can."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return (f"the path {printable(path)} is not valid UTF-8 and a Kaldi table cannot hold it; "
                "rename the file or folder")
    return None


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
    with _atomic_open(path) as f:
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
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a whole text file (UTF-8) atomically; on any error the old file, if any, is left as it was."""
    path = Path(path)
    with _atomic_open(path) as f:
        f.write(text)
    return path


@contextlib.contextmanager
def _atomic_open(path: Path) -> Iterator:
    """A text file open at a temporary name beside path, renamed to path when the block ends without error.

    The temporary name is unique (two writers never share one) and is removed on any error, so a failed
    write (a full disk, a value that cannot be encoded) leaves neither a partial file nor debris.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a table is as readable as any file
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno:  # a failed write() names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """An empty folder beside path to write a whole directory into; it replaces path when the block succeeds.

    On any error the staged folder is removed and path is left as it was. The swap is two renames (the old
    folder aside, the new one in), so path is always either the old complete directory or the new one, absent
    only between the renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    try:
        yield staged
        os.chmod(staged, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        try:
            os.replace(staged, path)
        except BaseException:
            if old is not None:  # put the old directory back
                os.replace(old / path.name, path)
            raise
    except BaseException as e:
        shutil.rmtree(staged, ignore_errors=True)
        name = getattr(e, "filename", None)
        if isinstance(e, OSError) and isinstance(name, str) and name.startswith(f"{staged}{os.sep}"):
            # name the file the user knows, not the staging folder that is gone
            raise OSError(e.errno, e.strerror, str(path / os.path.relpath(name, staged))) from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


# What stage 1 found in the release, for the later stages: <data>/release.json (written by local/data_prep.py).
RELEASE_RECORD = "release.json"


def write_release_record(data_dir: str | os.PathLike, parts: Mapping[str, bool], ruled_out: Iterable[str],
                         tables: Mapping[str, Iterable[str]]) -> Path:
    """Record which parts the release has, what their absence rules out and which tables each set holds."""
    record = {"parts": dict(parts), "ruled_out": list(ruled_out),
              "tables": {s: sorted(names) for s, names in tables.items()}}
    return write_text_atomic(Path(data_dir) / RELEASE_RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def release_tables(data_dir: str | os.PathLike, set_name: str, any_set: bool = False) -> set[str]:
    """The tables stage 1 wrote for one set, as its release record says.

    ``any_set``: when stage 1 prepared other sets only (``--sets test``), those of the first set it recorded
    (a release has the same modalities in every set).  A data dir made by hand or by an older stage 1 has no
    record: then the set's files are the record.
    """
    path = Path(data_dir) / RELEASE_RECORD
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            sets = record["tables"]
            if any_set and set_name not in sets and sets:
                set_name = sorted(sets)[0]
            return set(sets[set_name])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a stage-1 release record ({type(e).__name__}: {e}); rerun stage 1") from None
    set_dir = Path(data_dir) / set_name
    if not set_dir.is_dir():
        raise FileNotFoundError(f"{set_dir} not found: run stage 1 first (./run.sh --stage 1 --stop_stage 1)")
    return {p.name for p in set_dir.iterdir() if p.is_file()}

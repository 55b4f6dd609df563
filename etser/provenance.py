"""What a stage output was made from, so that a rerun never reuses a stale one silently.

Every stage output records the identity of its inputs (``provenance.json`` beside it, or a field of its
marker): features <- the input table (utterance ids, values, and for values that are files their size and
modification time) and the upstream config; a training <- the features' identity, the label files' contents,
the task and the training config; scores <- the model and the references.  A rerun compares the recorded
identity with the present one: equal -> the output is reused ("up to date"); different -> the stage redoes
exactly that output, or refuses (``on_change: refuse``) naming what changed.

Identities are small JSON-able dicts of strings, so that two can be compared field by field and the
difference told in words (``describe_changes``).  Only numpy-free stdlib code: every stage imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

ON_CHANGE = ("redo", "refuse")
FILE_NAME = "provenance.json"


class StaleError(RuntimeError):
    """An output's inputs changed and the user asked to refuse rather than redo."""


def file_identity(path: str | os.PathLike) -> str:
    """``size:mtime_ns`` of a file (following symlinks), ``missing`` when it cannot be stat'ed.

    Size and modification time, as make and rsync use: replacing a file in place changes them without reading
    a byte of it (hashing 14.8 GB of audio on every rerun would cost minutes).
    """
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def digest_lines(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def table_identity(table: Mapping[str, str], keys: Iterable[str] | None = None, files: bool = False) -> dict:
    """Identity of (a part of) a Kaldi table: the number of entries and a digest of ``key value`` lines; with
    ``files`` the value is a path and its :func:`file_identity` is part of the line.

    Also holds digests of the keys alone and of key+value, so that :func:`describe_changes` can say whether
    utterances were added or removed, values (paths, labels) changed, or only files changed in place.
    """
    keys = list(table) if keys is None else list(keys)
    ident = {
        "entries": str(len(keys)),
        "keys": digest_lines(keys),
        "values": digest_lines(f"{k} {table[k]}" for k in keys),
    }
    if files:
        ident["files"] = digest_lines(f"{k} {file_identity(table[k])}" for k in keys)
    return ident


def content_identity(path: str | os.PathLike) -> str:
    """sha256 of a small file's bytes (a label table, a config): content, not time, decides."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_changes(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Human-readable differences between two identities (nested dicts), one line per changed part.

    A table identity (a dict with ``keys``) is told by its most telling difference: the utterances changed,
    else values changed, else files changed in place.
    """
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        where = f"{prefix}{key}"
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            if "keys" in a and "keys" in b:
                if a["keys"] != b["keys"]:
                    out.append(f"{where}: the utterances changed (added or removed; "
                               f"{a.get('entries')} -> {b.get('entries')} entries)")
                elif a.get("values") != b.get("values"):
                    out.append(f"{where}: values changed (e.g. a path, a label or a transcript)")
                elif a.get("files") != b.get("files"):
                    out.append(f"{where}: files changed in place (size or modification time)")
                else:
                    out += describe_changes(a, b, prefix=f"{where}.")
            else:
                out += describe_changes(a, b, prefix=f"{where}.")
        elif a is None:
            out.append(f"{where}: not recorded before")
        elif b is None:
            out.append(f"{where}: no longer given")
        else:
            out.append(f"{where}: changed ({_short(a)} -> {_short(b)})")
    return out


def _short(value) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return s if len(s) <= 24 else s[:12] + "…"


def read(path: str | os.PathLike) -> dict | None:
    """A recorded identity, or None when absent or unreadable (an output without one is not trusted)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write(path: str | os.PathLike, ident: Mapping) -> None:
    """Atomically: a reader sees the old identity or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ident, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check(what: str, recorded: Mapping | None, present: Mapping, on_change: str = "redo") -> list[str]:
    """Compare an output's recorded identity with the present one.

    Returns [] when up to date; otherwise the list of changes (the caller redoes the output and logs them).
    ``on_change='refuse'`` raises :class:`StaleError` instead, naming ``what`` and every change.
    """
    if on_change not in ON_CHANGE:
        raise ValueError(f"on_change {on_change!r}: expected one of {', '.join(ON_CHANGE)}")
    if recorded is not None and dict(recorded) == dict(present):
        return []
    changes = (["no record of what it was made from (made by an older version, or interrupted)"]
               if recorded is None else describe_changes(recorded, present))
    changes = changes or ["its inputs changed"]
    if on_change == "refuse":
        raise StaleError(f"{what} is out of date: " + "; ".join(changes)
                         + " (rerun with --on_change redo to redo it, or restore the inputs)")
    return changes


def open_training_dir(exp_dir: str | os.PathLike, present: Mapping, overwrite: bool, on_change: str,
                      log: logging.Logger) -> dict | None:
    """Decide what a (re)run of a training does with ``exp_dir``, whose inputs are ``present`` now.

    Returns the summary of a finished training (its ``done``) when it is up to date: reuse it. Otherwise makes
    the dir ready and returns None: a started training whose record matches is left to resume from its
    checkpoints; one whose inputs changed (or ``overwrite``) is removed first, or with ``on_change='refuse'``
    :class:`StaleError` is raised naming the changes. The present identity is recorded before training starts.
    """
    exp_dir = Path(exp_dir)
    done = exp_dir / "done"
    started = done.is_file() or any((exp_dir / "checkpoints").glob("epoch*.pt"))
    if started and not overwrite:
        changes = check(str(exp_dir), read(exp_dir / FILE_NAME), present, on_change)
        if changes:
            log.warning("%s: retraining from scratch, its inputs changed: %s", exp_dir, "; ".join(changes))
            overwrite = True
        elif done.is_file():
            summary = json.loads(done.read_text())
            log.info("%s: already trained (best epoch %s) and up to date; skipping (--overwrite true to retrain)",
                     exp_dir, summary["best_epoch"])
            return summary
    if overwrite and exp_dir.exists():
        shutil.rmtree(exp_dir)
    (exp_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write(exp_dir / FILE_NAME, present)
    return None

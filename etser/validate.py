"""Check and repair Kaldi data directories (utils/validate_data_dir.sh, utils/fix_data_dir.sh).

Kaldi's rules, as in egs/wsj/s5/utils/validate_data_dir.sh:
- every table is valid UTF-8 text, one ``key value`` per line, sorted under ``LC_ALL=C`` (byte order) with
  unique keys; no control characters, no empty lines;
- the per-utterance files (``wav.scp``, ``utt2spk``, ``text``, ``text_raw``, ``utt2*``, ``feats.scp``,
  ``segments``, ``vad.scp``) have identical key sets (with ``segments``, ``wav.scp`` is per recording);
- ``spk2utt`` is exactly what utt2spk gives; other ``spk2*`` files (and ``cmvn.scp``) cover every speaker;
- utterance ids start with their speaker id, so that sorting by utterance also sorts by speaker;
- values are present where one is required (wav.scp, utt2spk, utt2*; utt2dur a positive number ...).
Not tables: ``excluded``, ``*.md``, ``*.json``, hidden files, subdirectories.

A corpus's own tables are described by a rules file (``--tables FILE``; the recipe's is
``conf/data_tables``), one rule a line, the first matching pattern wins, ``#`` starts a comment:

    <file name or glob>  <kind: utt|sparse|spk|reco>  <value: any|word|text|number|json|path>  [min max]

``sparse`` is a per-utterance table that may leave utterances out (e.g. captions of one kind): its keys
must be utterances of utt2spk, and fixing never removes an utterance for being absent from it.

  python -m etser.validate [--tables FILE] DIR [DIR ...]        validate; exit 1 listing every problem
  python -m etser.validate [--tables FILE] --fix DIR [DIR ...]  sort, keep the utterances present in every
                                                per-utterance file, rebuild spk2utt; originals go to DIR/.backup/
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import shutil
import sys
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from etser.datadir import c_sort_key, split_line, utt2spk_to_spk2utt, write_table

# Per-utterance tables besides utt2*; wav.scp is per recording when segments exists.
PER_UTT = ("wav.scp", "utt2spk", "text", "text_raw", "feats.scp", "segments", "vad.scp")
PER_RECO = ("reco2file_and_channel", "reco2dur")
# Known files that are not key-sorted tables.
NOT_TABLES = ("excluded",)
BACKUP = ".backup"


KINDS = ("utt", "sparse", "spk", "reco")
VALUE_TYPES = ("any", "word", "text", "number", "json", "path")


@dataclass(frozen=True)
class Rule:
    """How a corpus's own table is checked (a line of the --tables file)."""

    pattern: str
    kind: str
    value: str = "any"
    low: float | None = None
    high: float | None = None


class RulesError(ValueError):
    pass


def read_rules(path: str | Path | None) -> tuple[Rule, ...]:
    """The rules of a --tables file (see the module docstring); () for None."""
    if path is None:
        return ()
    rules = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"{path}: cannot read the table rules: {e}") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) not in (2, 3, 5):
            raise RulesError(f"{where}: expected 'pattern kind [value [min max]]', got {line.strip()!r}")
        pattern, kind = fields[0], fields[1]
        value = fields[2] if len(fields) > 2 else "any"
        if kind not in KINDS:
            raise RulesError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if value not in VALUE_TYPES:
            raise RulesError(f"{where}: value type {value!r} is not one of {', '.join(VALUE_TYPES)}")
        low = high = None
        if len(fields) == 5:
            if value != "number":
                raise RulesError(f"{where}: min and max are for value type number, not {value}")
            low, high = _float(fields[3]), _float(fields[4])
            if low is None or high is None or low > high:
                raise RulesError(f"{where}: min {fields[3]!r} and max {fields[4]!r} are not numbers with min <= max")
        rules.append(Rule(pattern, kind, value, low, high))
    return tuple(rules)


def find_rule(name: str, rules: tuple[Rule, ...]) -> Rule | None:
    return next((r for r in rules if fnmatch.fnmatchcase(name, r.pattern)), None)


def file_kind(name: str, has_segments: bool, rules: tuple[Rule, ...] = ()) -> str | None:
    """'utt', 'sparse', 'spk', 'reco', or None for files that are not tables (or unknown)."""
    rule = find_rule(name, rules)
    if rule is not None:
        return rule.kind
    if name == "wav.scp" and has_segments:
        return "reco"
    if name in PER_UTT or name.startswith("utt2"):
        return "utt"
    if name.startswith("spk2") or name == "cmvn.scp":
        return "spk"
    if name in PER_RECO:
        return "reco"
    return None


def is_ignored(path: Path) -> bool:
    """Files that are no tables and are not mentioned at all."""
    name = path.name
    return (name.startswith(".") or not path.is_file() or name in NOT_TABLES
            or name.endswith((".md", ".json", ".tmp", "~")))


# ---- value rules ----

def _float(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _check_rule(rule: Rule, value: str) -> str | None:
    if not value:
        return "no value"
    if rule.value == "word" and len(value.split()) != 1:
        return f"{value!r} is not one word"
    if rule.value == "number":
        x = _float(value)
        if x is None:
            return f"{value!r} is not a number"
        if rule.low is not None and not rule.low <= x <= rule.high:
            return f"{value!r} is not a number in [{rule.low:g}, {rule.high:g}]"
    if rule.value == "json":
        try:
            json.loads(value)
        except ValueError:
            return f"value is not JSON: {value[:40]!r}"
    return None


def check_value(name: str, value: str, rules: tuple[Rule, ...] = ()) -> str | None:
    """Why the value is not acceptable in table `name`, or None."""
    rule = find_rule(name, rules)
    if rule is not None:
        return _check_rule(rule, value)
    if name in ("text", "text_raw"):
        return None  # a transcript may be empty (e.g. only markup such as [laughing])
    if not value:
        return "no value"
    if name == "utt2spk" and len(value.split()) != 1:
        return f"speaker id {value!r} is not one word"
    if name in ("utt2dur", "reco2dur"):
        x = _float(value)
        if x is None or x <= 0:
            return f"duration {value!r} is not a positive number"
    elif name == "utt2num_frames":
        if not value.isdigit() or int(value) <= 0:
            return f"{value!r} is not a positive integer"
    elif name == "segments":
        fields = value.split()
        start, end = (_float(fields[1]), _float(fields[2])) if len(fields) == 3 else (None, None)
        if start is None or end is None or start < 0 or not (end > start or end == -1):
            return f"expected 'recording start end' with 0 <= start < end, got {value!r}"
    elif name == "spk2gender" and value not in ("m", "f"):
        return f"gender {value!r} is not m or f"
    return None


# Unicode categories Cc (controls), Zl, Zp, and the byte-order mark: nothing printable.
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _bad_char(text: str) -> str | None:
    """The first character that has no place in a table (control, line separator, BOM), described."""
    m = _BAD_CHARS.search(text)
    if m is None:
        return None
    ch = m.group()
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, unicodedata.category(ch))})"


# ---- reading ----

@dataclass
class Entry:
    lineno: int
    key: str
    value: str


@dataclass
class Table:
    name: str
    entries: list[Entry] = field(default_factory=list)
    unreadable: bool = False  # not UTF-8 or not readable: contents unusable

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]


class Problems:
    """Problems grouped by (file, kind) so a thousand unsorted lines print as one line plus a count."""

    def __init__(self, max_listed: int = 20):
        self.max_listed = max_listed
        self.groups: dict[tuple[str, str], list[str]] = defaultdict(list)

    def add(self, file: str, kind: str, message: str) -> None:
        self.groups[(file, kind)].append(message)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def count(self) -> int:
        return sum(len(v) for v in self.groups.values())

    def lines(self) -> list[str]:
        out = []
        for (file, kind), messages in self.groups.items():
            shown = messages if self.max_listed <= 0 else messages[:self.max_listed]
            out.extend(shown)
            if len(messages) > len(shown):
                out.append(f"  ... and {len(messages) - len(shown)} more of this kind ({kind}) in {file}")
        return out


def scan_table(path: Path, problems: Problems, rules: tuple[Rule, ...] = ()) -> Table:
    """Read a table leniently, recording every problem of its lines (encoding, format, order, values)."""
    name = path.name
    table = Table(name)
    try:
        data = path.read_bytes()
    except OSError as e:
        problems.add(name, "unreadable", f"{path}: cannot read: {e}")
        table.unreadable = True
        return table
    if not data:
        problems.add(name, "empty", f"{path}: empty file")
        return table
    if not data.endswith(b"\n"):
        problems.add(name, "no final newline", f"{path}: last line has no newline")
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    seen: dict[str, int] = {}
    prev: bytes | None = None
    for lineno, raw in enumerate(raw_lines, 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.add(name, "not UTF-8", f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
            table.unreadable = True
            continue
        if line.endswith("\r"):
            problems.add(name, "CRLF", f"{where}: Windows line ending (CR LF)")
            line = line[:-1]
        if line.startswith("\ufeff"):
            problems.add(name, "BOM", f"{where}: starts with a byte-order mark (U+FEFF)")
            line = line[1:]
        if not line.strip():
            problems.add(name, "empty line", f"{where}: empty line")
            continue
        if line[0].isspace():
            problems.add(name, "leading whitespace", f"{where}: line starts with whitespace")
        key, value = split_line(line)
        stripped = line.strip()
        sep = stripped[len(key):len(stripped) - len(value)] if value else ""
        bad = _bad_char(key) or _bad_char(value)
        if not bad and sep.strip(" \t"):
            bad = f"{sep!r} between key and value (use a space)"
        if bad:
            problems.add(name, "non-printable", f"{where}: key {key!r}: non-printable character {bad}")
        why = check_value(name, value, rules)
        if why:
            problems.add(name, "bad value", f"{where}: key {key!r}: {why}")
        kb = c_sort_key(key)
        if key in seen:
            problems.add(name, "duplicate key", f"{where}: duplicate key {key!r} (first on line {seen[key]})")
        else:
            seen[key] = lineno
            # adjacent lines, as `LC_ALL=C sort -c` compares them
            if prev is not None and kb < prev:
                problems.add(name, "not sorted", f"{where}: not sorted under LC_ALL=C: {key!r} after "
                                                 f"{prev.decode('utf-8')!r} (utils/fix_data_dir.sh sorts)")
        prev = kb
        table.entries.append(Entry(lineno, key, value))
    return table


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _list_keys(keys, limit: int = 5) -> str:
    keys = sorted(keys, key=c_sort_key)
    shown = " ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit})" if len(keys) > limit else "")


@dataclass
class Report:
    directory: Path
    problems: Problems
    num_utts: int
    num_spks: int
    checked: list[str]
    not_checked: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        s = (f"{self.directory}: OK: {_n(self.num_utts, 'utterance')}, {_n(self.num_spks, 'speaker')}, "
             f"{_n(len(self.checked), 'file')} checked ({' '.join(self.checked)})")
        if self.not_checked:
            s += f"; not checked (unknown): {' '.join(self.not_checked)}"
        return s


def list_tables(directory: Path, rules: tuple[Rule, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """{file name: kind} of the tables in directory, and the unknown file names."""
    has_segments = (directory / "segments").is_file()
    tables, unknown = {}, []
    for path in sorted(directory.iterdir(), key=lambda p: c_sort_key(p.name)):
        if is_ignored(path):
            continue
        kind = file_kind(path.name, has_segments, rules)
        if kind is None:
            unknown.append(path.name)
        else:
            tables[path.name] = kind
    return tables, unknown


def validate_data_dir(directory: str | Path, max_listed: int = 20, rules: tuple[Rule, ...] = ()) -> Report:
    """Check a data directory against Kaldi's rules and the corpus's table ``rules``; the report lists every
    problem found."""
    d = Path(directory)
    problems = Problems(max_listed)
    if not d.is_dir():
        problems.add(str(d), "missing", f"{d}: not a directory")
        return Report(d, problems, 0, 0, [], [])
    kinds, unknown = list_tables(d, rules)
    tables = {name: scan_table(d / name, problems, rules) for name in kinds}

    for required in ("utt2spk", "spk2utt"):
        if required not in tables:
            problems.add(required, "missing", f"{d}/{required}: missing (required)")
    if "wav.scp" not in tables and "feats.scp" not in tables:
        problems.add("wav.scp", "missing", f"{d}/wav.scp: missing (wav.scp or feats.scp is required)")

    utt2spk = {e.key: e.value for e in tables["utt2spk"].entries} if "utt2spk" in tables else {}
    utts = set(utt2spk)
    speakers = set(utt2spk.values())

    # identical key sets across the per-utterance files
    if "utt2spk" in tables and not tables["utt2spk"].unreadable:
        for name, kind in kinds.items():
            if kind not in ("utt", "sparse") or name == "utt2spk" or tables[name].unreadable:
                continue
            keys = set(tables[name].keys())
            missing, extra = (utts - keys if kind == "utt" else set()), keys - utts
            if missing:
                problems.add(name, "key set", f"{d}/{name}: {_n(len(missing), 'utterance')} of utt2spk missing: "
                                              f"{_list_keys(missing)}")
            if extra:
                problems.add(name, "key set", f"{d}/{name}: {_n(len(extra), 'utterance')} not in utt2spk: "
                                              f"{_list_keys(extra)}")

    # utterance ids start with their speaker id, and sorting by utterance sorts by speaker
    prev_spk = prev_utt = None
    for e in tables["utt2spk"].entries if "utt2spk" in tables else []:
        if e.value and not e.key.startswith(e.value):
            problems.add("utt2spk", "speaker prefix", f"{d}/utt2spk:{e.lineno}: utterance {e.key!r} does not "
                                                      f"start with its speaker id {e.value!r}")
        if prev_spk is not None and c_sort_key(e.key) > c_sort_key(prev_utt) \
                and c_sort_key(e.value) < c_sort_key(prev_spk):
            problems.add("utt2spk", "speaker order", f"{d}/utt2spk:{e.lineno}: sorting by utterance does not "
                                                     f"sort by speaker: {e.key!r} ({e.value}) comes after "
                                                     f"{prev_utt!r} ({prev_spk})")
        prev_spk, prev_utt = e.value, e.key

    # spk2utt is what utt2spk gives
    if "spk2utt" in tables and "utt2spk" in tables:
        listed: dict[str, str] = {}
        for e in tables["spk2utt"].entries:
            where = f"{d}/spk2utt:{e.lineno}"
            its = e.value.split()
            for utt in its:
                if utt in listed:
                    problems.add("spk2utt", "consistency", f"{where}: utterance {utt!r} also listed under "
                                                           f"speaker {listed[utt]!r}")
                    continue
                listed[utt] = e.key
                if utt not in utt2spk:
                    problems.add("spk2utt", "consistency", f"{where}: utterance {utt!r} is not in utt2spk")
                elif utt2spk[utt] != e.key:
                    problems.add("spk2utt", "consistency", f"{where}: utterance {utt!r} is listed under speaker "
                                                           f"{e.key!r} but utt2spk says {utt2spk[utt]!r}")
            if its != sorted(its, key=c_sort_key):
                problems.add("spk2utt", "consistency", f"{where}: utterances of {e.key!r} are not in C order")
        for utt in sorted(utts - set(listed), key=c_sort_key):
            problems.add("spk2utt", "consistency", f"{d}/spk2utt: utterance {utt!r} of speaker "
                                                   f"{utt2spk[utt]!r} (utt2spk) is not listed")

    # per-speaker files cover exactly the speakers
    for name, kind in kinds.items():
        if kind != "spk" or name == "spk2utt" or "utt2spk" not in tables:
            continue
        keys = set(tables[name].keys())
        if speakers - keys:
            problems.add(name, "key set", f"{d}/{name}: speakers missing: {_list_keys(speakers - keys)}")
        if keys - speakers:
            problems.add(name, "key set", f"{d}/{name}: speakers not in utt2spk: {_list_keys(keys - speakers)}")

    # with segments: recordings of segments and wav.scp agree
    if "segments" in tables and "wav.scp" in tables:
        recos = {e.key for e in tables["wav.scp"].entries}
        used = {e.value.split()[0] for e in tables["segments"].entries if e.value}
        for name in [n for n, k in kinds.items() if k == "reco"]:
            keys = set(tables[name].keys())
            if used - keys:
                problems.add(name, "key set", f"{d}/{name}: recordings used in segments are missing: "
                                              f"{_list_keys(used - keys)}")
            if name == "wav.scp" and recos - used:
                problems.add(name, "key set", f"{d}/{name}: recordings without segments: {_list_keys(recos - used)}")

    return Report(d, problems, len(utts), len(speakers), list(tables), unknown)


# ---- fixing ----

class FixError(Exception):
    pass


def _read_for_fix(path: Path) -> tuple[dict[str, str], list[str]]:
    """Table contents for fixing: identical duplicate lines and blank lines are dropped (and reported)."""
    notes = []
    table: dict[str, str] = {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise FixError(f"{path}: not valid UTF-8 (byte {e.start}); fix_data_dir cannot repair this") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r").lstrip("\ufeff")
        if not line.strip():
            continue
        key, value = split_line(line)
        if "\r" in value:
            raise FixError(f"{path}:{lineno}: key {key!r}: carriage return inside the value")
        if key in table:
            if table[key] != value:
                raise FixError(f"{path}:{lineno}: key {key!r} appears twice with different values "
                               f"({table[key]!r} and {value!r}); decide which is right and remove the other")
            notes.append(f"{path.name}: removed a repeated line for {key!r} (line {lineno})")
            continue
        table[key] = value
    return table, notes


@dataclass
class FixResult:
    kept: int
    removed: dict[str, list[tuple[str, str]]]  # utterance -> [(category, detail)]
    rewritten: list[str]
    notes: list[str]


def fix_data_dir(directory: str | Path, rules: tuple[Rule, ...] = ()) -> FixResult:
    """Kaldi's fix_data_dir.sh: sort the tables, keep the utterances present (with a valid value) in every
    per-utterance file and whose speaker is in every per-speaker file, rebuild spk2utt.

    Files that change are copied to directory/.backup/ first; removed utterances and why are listed in
    directory/.backup/removed. Raises FixError for what cannot be repaired mechanically.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FixError(f"{d}: not a directory")
    kinds, unknown = list_tables(d, rules)
    tables, notes = {}, []
    for name in kinds:
        tables[name], n = _read_for_fix(d / name)
        notes += n
    if "utt2spk" not in tables:
        if "spk2utt" not in tables:
            raise FixError(f"{d}: neither utt2spk nor spk2utt exists")
        utt2spk: dict[str, str] = {}
        for spk, utts in tables["spk2utt"].items():
            for utt in utts.split():
                if utt2spk.setdefault(utt, spk) != spk:
                    raise FixError(f"{d}/spk2utt: utterance {utt!r} is listed under speakers {utt2spk[utt]!r} "
                                   f"and {spk!r}; no utt2spk to decide which is right")
        tables["utt2spk"] = utt2spk
        kinds["utt2spk"] = "utt"
        notes.append("utt2spk: made from spk2utt")

    per_utt = [n for n, k in kinds.items() if k == "utt"]
    sparse = [n for n, k in kinds.items() if k == "sparse"]
    per_spk = [n for n, k in kinds.items() if k == "spk" and n != "spk2utt"]
    per_reco = [n for n, k in kinds.items() if k == "reco"]
    # utterance -> [(category, detail)]; the category is what the summary counts
    reasons: dict[str, list[tuple[str, str]]] = defaultdict(list)
    universe = set().union(*(tables[n].keys() for n in per_utt))
    for name in per_utt:
        for utt in universe:
            if utt not in tables[name]:
                reasons[utt].append((f"missing from {name}", f"missing from {name}"))
            elif why := check_value(name, tables[name][utt], rules):
                reasons[utt].append((f"invalid value in {name}", f"{name}: {why}"))
    for name in per_spk:
        for utt, spk in tables["utt2spk"].items():
            if spk not in tables[name]:
                reasons[utt].append((f"speaker missing from {name}", f"speaker {spk} missing from {name}"))
    if "segments" in tables:
        for utt, seg in tables["segments"].items():
            reco = seg.split()[0] if seg else None
            for name in per_reco:
                if reco is not None and reco not in tables[name]:
                    reasons[utt].append((f"recording missing from {name}", f"recording {reco} missing from {name}"))
    kept = sorted(universe - set(reasons), key=c_sort_key)

    new: dict[str, dict[str, str]] = {}
    for name in per_utt:
        new[name] = {u: tables[name][u] for u in kept}
    kept_set = set(kept)
    for name in sparse:
        new[name] = {u: v for u, v in tables[name].items() if u in kept_set}
        bad = sorted(u for u, v in new[name].items() if check_value(name, v, rules))
        if bad:
            raise FixError(f"{d}/{name}: {_n(len(bad), 'utterance')} with an invalid value "
                           f"({_list_keys(bad)}): {check_value(name, new[name][bad[0]], rules)}")
    utt2spk = new["utt2spk"]
    speakers = set(utt2spk.values())
    new["spk2utt"] = {s: " ".join(us) for s, us in utt2spk_to_spk2utt(utt2spk).items()}
    for name in per_spk:
        new[name] = {s: v for s, v in tables[name].items() if s in speakers}
    if per_reco:
        # without segments a recording is an utterance
        recos = {tables["segments"][u].split()[0] for u in kept} if "segments" in tables else set(kept)
        for name in per_reco:
            new[name] = {r: v for r, v in tables[name].items() if r in recos}

    def content(table: dict[str, str]) -> bytes:
        items = sorted(table.items(), key=lambda kv: c_sort_key(kv[0]))
        return "".join(f"{k} {v}\n" if v else f"{k}\n" for k, v in items).encode("utf-8")

    changed = [n for n in sorted(new, key=c_sort_key)
               if not (d / n).is_file() or (d / n).read_bytes() != content(new[n])]
    if changed:
        backup = d / BACKUP
        backup.mkdir(exist_ok=True)
        for name in changed:
            if (d / name).is_file():
                shutil.copy2(d / name, backup / name)
        for name in changed:
            write_table(d / name, new[name])
    if reasons:
        (d / BACKUP).mkdir(exist_ok=True)
        with open(d / BACKUP / "removed", "w", encoding="utf-8") as f:
            for utt in sorted(reasons, key=c_sort_key):
                f.write(f"{utt}\t{'; '.join(detail for _, detail in reasons[utt])}\n")
    if unknown:
        notes.append(f"left as they are (unknown files): {' '.join(unknown)}")
    return FixResult(len(kept), dict(reasons), changed, notes)


def _print_fix(d: Path, result: FixResult, max_listed: int) -> None:
    total = result.kept + len(result.removed)
    print(f"fix_data_dir: {d}: kept {result.kept} of {_n(total, 'utterance')}, removed {len(result.removed)}")
    by_reason: dict[str, int] = defaultdict(int)
    for rs in result.removed.values():
        for category in {c for c, _ in rs}:
            by_reason[category] += 1
    for category, n in sorted(by_reason.items()):
        print(f"  {_n(n, 'utterance')} {category}")
    for i, utt in enumerate(sorted(result.removed, key=c_sort_key)):
        if max_listed > 0 and i == max_listed:
            print(f"  ... and {len(result.removed) - max_listed} more (all in {d}/{BACKUP}/removed)")
            break
        print(f"  removed {utt}: {'; '.join(detail for _, detail in result.removed[utt])}")
    for note in result.notes:
        print(f"  {note}")
    if result.rewritten:
        print(f"  rewritten: {' '.join(result.rewritten)} (originals in {d}/{BACKUP}/)")
    else:
        print("  nothing to change")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etser.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fix", action="store_true", help="repair (fix_data_dir) instead of only checking")
    parser.add_argument("--max_listed", type=int, default=20,
                        help="problems of one kind listed per file (0: all; default 20)")
    parser.add_argument("--tables", default=None, metavar="FILE",
                        help="the corpus's table rules (e.g. conf/data_tables; see above)")
    parser.add_argument("dirs", nargs="+", metavar="DIR")
    args = parser.parse_args(argv)
    try:
        rules = read_rules(args.tables)
    except RulesError as e:
        print(f"validate_data_dir: {e}", file=sys.stderr)
        return 1
    status = 0
    for d in map(Path, args.dirs):
        if args.fix:
            try:
                result = fix_data_dir(d, rules)
            except (FixError, OSError, ValueError) as e:
                print(f"fix_data_dir: {e}", file=sys.stderr)
                status = 1
                continue
            _print_fix(d, result, args.max_listed)
        report = validate_data_dir(d, args.max_listed, rules)
        if report.ok:
            print(("validate_data_dir: " if not args.fix else "  now valid: ") + report.summary())
            continue
        status = 1
        lead = "problem(s) fix_data_dir cannot repair" if args.fix else "problem(s)"
        print(f"validate_data_dir: {d}: {report.problems.count()} {lead}:", file=sys.stderr)
        for line in report.problems.lines():
            print(f"  {line}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

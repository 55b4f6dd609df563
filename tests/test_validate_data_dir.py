"""utils/validate_data_dir.sh and utils/fix_data_dir.sh (etser.validate): Kaldi's data-directory rules."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kaldiio
import pytest

from etser.datadir import read_keys, read_table, utt2spk_to_spk2utt, write_table
from etser.validate import FixError, RulesError, fix_data_dir, main, read_rules, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
# the recipe's own table rules (EmotionTalk's extra tables); the generic validator knows only Kaldi's
RULES = read_rules(ROOT / "conf" / "data_tables")
SPEAKERS = ("S01", "S02", "S13")
TABLES = ("spk2utt", "text", "text_raw", "utt2caption", "utt2dur", "utt2emo_audio", "utt2emo_multi",
          "utt2sentiment", "utt2spk", "wav.scp")


def make_data_dir(d: Path, per_speaker: int = 3) -> Path:
    """A valid data dir like stage 1 writes: Chinese text, audio paths with spaces, several label files."""
    d.mkdir(parents=True, exist_ok=True)
    utt2spk = {}
    for spk in SPEAKERS:
        for turn in range(1, per_speaker + 1):
            utt2spk[f"{spk}-G00002_01_{spk[1:]}_{turn:03d}"] = spk
    utts = list(utt2spk)
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", {s: " ".join(u) for s, u in utt2spk_to_spk2utt(utt2spk).items()})
    write_table(d / "wav.scp", {u: f"/data/Emotion Talk/Audio/{u} (copy).wav" for u in utts})
    write_table(d / "text", {u: f"我今天很高兴，真的！ turn {i}" for i, u in enumerate(utts)})
    write_table(d / "text_raw", {u: f"[laughing]我今天很高兴，[over/]真的！[/over] turn {i}"
                                 for i, u in enumerate(utts)})
    write_table(d / "utt2caption", {u: json.dumps({"emotion": "开心"}, ensure_ascii=False, separators=(",", ":"))
                                    for u in utts})
    write_table(d / "utt2dur", {u: f"{1.5 + i / 10:.3f}" for i, u in enumerate(utts)})
    write_table(d / "utt2emo_audio", {u: "happy" for u in utts})
    write_table(d / "utt2emo_multi", {u: ("sad" if i % 2 else "neutral") for i, u in enumerate(utts)})
    write_table(d / "utt2sentiment", {u: f"{-2 + 0.2 * (i % 21):.1f}" for i, u in enumerate(utts)})
    # not tables: must be ignored even though unsorted / not key-value
    (d / "excluded").write_text("S99-zz\tG/zz.json\tno label\nS05-aa\tG/aa.json\tbad json\n")
    (d / "meta.json").write_text('{"b": 1,\n "a": 2}\n')
    (d / "stats.md").write_text("| x |\n|---|\n")
    return d


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path / "train")


def problems(d: Path, rules=RULES) -> list[str]:
    return validate_data_dir(d, max_listed=0, rules=rules).problems.lines()


def assert_problem(d: Path, *fragments: str) -> list[str]:
    """Some problem line contains all fragments."""
    lines = problems(d)
    assert any(all(f in line for f in fragments) for line in lines), (fragments, lines)
    return lines


def rewrite(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(edit(lines)), encoding="utf-8")


def shell(cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LC_ALL": "C"})


# ---- valid directory ----

def test_valid_dir_passes(data_dir):
    report = validate_data_dir(data_dir)
    assert report.ok, report.problems.lines()
    assert (report.num_utts, report.num_spks) == (9, 3)
    assert sorted(report.checked) == sorted(TABLES)
    line = report.summary()
    assert str(data_dir) in line and "9 utterances" in line and "3 speakers" in line and "10 files" in line


def test_shell_command_from_repo_root_with_path_sh(data_dir):
    result = shell(f'. ./path.sh && utils/validate_data_dir.sh "{data_dir}"')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "OK: 9 utterances, 3 speakers" in lines[0]


def test_sort_c_and_kaldiio_agree_on_valid_dir(data_dir):
    """Our order is the order of `LC_ALL=C sort -c`, and kaldiio reads the same keys and values."""
    for name in TABLES:
        result = subprocess.run(["sort", "-c", str(data_dir / name)], capture_output=True,
                                env={**os.environ, "LC_ALL": "C"})
        assert result.returncode == 0, (name, result.stderr)
        ours = read_table(data_dir / name)
        theirs = kaldiio.load_scp(str(data_dir / name))
        assert list(theirs.keys()) == list(ours), name
    wav = kaldiio.load_scp(str(data_dir / "wav.scp"))
    ours = read_table(data_dir / "wav.scp")
    # LazyLoader keeps the raw value (the path, spaces included) before loading
    assert {k: wav._dict[k] for k in wav} == ours
    assert " (copy).wav" in next(iter(ours.values()))


def test_unicode_sorting_is_byte_order(tmp_path):
    """Keys beyond ASCII: Python's code-point order must equal C byte order, as sort -c sees it."""
    d = tmp_path / "u"
    d.mkdir()
    utt2spk = {"S01-a": "S01", "S01-z": "S01", "S01-é": "S01", "S01-中": "S01", "S01-😀": "S01", "S01-Z": "S01"}
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", {s: " ".join(u) for s, u in utt2spk_to_spk2utt(utt2spk).items()})
    write_table(d / "wav.scp", {u: "/x.wav" for u in utt2spk})
    assert validate_data_dir(d).ok, problems(d)
    for name in ("utt2spk", "wav.scp"):
        assert subprocess.run(["sort", "-c", str(d / name)], env={**os.environ, "LC_ALL": "C"}).returncode == 0


# ---- sorting and keys ----

def test_unsorted_file_reported_by_validator_and_sort_c(data_dir):
    rewrite(data_dir / "utt2emo_multi", lambda ls: [ls[1], ls[0], *ls[2:]])
    lines = assert_problem(data_dir, "utt2emo_multi:2", "not sorted")
    assert len(lines) == 1
    result = subprocess.run(["sort", "-c", str(data_dir / "utt2emo_multi")], capture_output=True,
                            env={**os.environ, "LC_ALL": "C"})
    assert result.returncode != 0
    result = shell(f'. ./path.sh && utils/validate_data_dir.sh "{data_dir}"')
    assert result.returncode == 1
    assert "utt2emo_multi:2" in result.stderr and "not sorted" in result.stderr


def test_locale_order_is_not_c_order(tmp_path):
    """Upper case sorts before lower case in C order; a locale-sorted file (a, B) is reported."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "utt2spk").write_text("S01-a S01\nS01-B S01\n")
    (d / "spk2utt").write_text("S01 S01-B S01-a\n")
    (d / "wav.scp").write_text("S01-B /b.wav\nS01-a /a.wav\n")
    assert_problem(d, "utt2spk:2", "not sorted", "'S01-B'")
    assert not any("wav.scp" in line for line in problems(d))


def test_duplicate_keys(data_dir):
    rewrite(data_dir / "utt2dur", lambda ls: [ls[0], ls[0].replace("1.500", "2.000"), *ls[1:]])
    assert_problem(data_dir, "utt2dur:2", "duplicate key", "first on line 1")


def test_missing_and_extra_keys(data_dir):
    rewrite(data_dir / "text", lambda ls: ls[:4] + ls[5:])
    rewrite(data_dir / "utt2emo_audio", lambda ls: ls + ["S13-G00002_13_99_999 happy\n"])
    lines = problems(data_dir)
    assert any("/text:" in line and "1 utterance of utt2spk missing" in line and "S02-G00002_01_02_002" in line
               for line in lines), lines
    assert any("/utt2emo_audio:" in line and "not in utt2spk" in line and "S13-G00002_13_99_999" in line
               for line in lines), lines


def test_every_problem_is_printed(data_dir):
    """Problems in several files are all listed, each with its file (and line or key)."""
    rewrite(data_dir / "text", lambda ls: ls[:1] + ls[2:])
    rewrite(data_dir / "utt2dur", lambda ls: [ls[0].replace("1.500", "0")] + ls[1:])
    rewrite(data_dir / "wav.scp", lambda ls: [ls[1], ls[0], *ls[2:]])
    result = subprocess.run([os.sys.executable, "-m", "etser.validate", str(data_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    err = result.stderr
    assert "/text:" in err and "utt2dur:1" in err and "wav.scp:2" in err
    assert "3 problem(s)" in err


def test_listing_is_capped_with_a_count(data_dir):
    rewrite(data_dir / "utt2dur", lambda ls: [line.replace(line.split()[1], "-1") for line in ls])
    lines = validate_data_dir(data_dir, max_listed=2).problems.lines()
    assert sum("not a positive number" in line for line in lines) == 2
    assert any("7 more" in line and "utt2dur" in line for line in lines), lines
    assert main(["--max_listed", "0", str(data_dir)]) == 1


# ---- speakers ----

def test_spk2utt_inconsistent(data_dir):
    # move S01's last utterance to the end of S02's line
    rewrite(data_dir / "spk2utt", lambda ls: [ls[0].replace(" S01-G00002_01_01_003", ""),
                                               ls[1].rstrip("\n") + " S01-G00002_01_01_003\n", ls[2]])
    lines = assert_problem(data_dir, "spk2utt:2", "S01-G00002_01_01_003", "listed under speaker 'S02'",
                           "utt2spk says 'S01'")
    assert any("spk2utt:2" in line and "not in C order" in line for line in lines)


def test_spk2utt_missing_utterance_and_speaker(data_dir):
    rewrite(data_dir / "spk2utt", lambda ls: ls[:2])
    assert_problem(data_dir, "spk2utt", "S13-G00002_01_13_001", "not listed")


def test_spk2utt_required(data_dir):
    (data_dir / "spk2utt").unlink()
    assert_problem(data_dir, "spk2utt", "missing (required)")


def test_utterance_not_prefixed_by_speaker(data_dir):
    rewrite(data_dir / "utt2spk", lambda ls: [ls[0].replace(" S01", " S02")] + ls[1:])
    assert_problem(data_dir, "utt2spk:1", "does not start with its speaker id 'S02'")


def test_prefix_without_speaker_order(tmp_path):
    """S1/S10: both utterances start with their speaker, but utterance order is not speaker order."""
    d = tmp_path / "d"
    d.mkdir()
    utt2spk = {"S10a": "S10", "S1x": "S1"}
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", {"S1": "S1x", "S10": "S10a"})
    write_table(d / "wav.scp", {u: "/a.wav" for u in utt2spk})
    lines = assert_problem(d, "utt2spk:2", "does not sort by speaker")
    assert not any("does not start with" in line for line in lines)


def test_spk2_files_cover_speakers(data_dir):
    write_table(data_dir / "spk2gender", {"S01": "m", "S02": "f", "S99": "f"})
    lines = assert_problem(data_dir, "spk2gender", "speakers missing", "S13")
    assert any("spk2gender" in line and "not in utt2spk" in line and "S99" in line for line in lines)


# ---- values and characters ----

@pytest.mark.parametrize("name, bad, expect", [
    ("wav.scp", "", "no value"),
    ("utt2spk", "", "no value"),
    ("utt2dur", "0", "not a positive number"),
    ("utt2dur", "abc", "not a positive number"),
    ("utt2dur", "nan", "not a positive number"),
    ("utt2emo_audio", "", "no value"),
    ("utt2emo_multi", "", "no value"),
    ("utt2sentiment", "2.2", "[-2, 2]"),
    ("utt2sentiment", "x", "not a number"),
    ("utt2caption", "{speaker", "not JSON"),
    ("utt2emo_audio", "very happy", "not one word"),
])
def test_required_values(data_dir, name, bad, expect):
    def edit(lines):
        key = lines[4].split()[0]
        return lines[:4] + [f"{key} {bad}\n" if bad else f"{key}\n"] + lines[5:]
    rewrite(data_dir / name, edit)
    assert_problem(data_dir, f"{name}:5", expect)


def test_empty_transcript_is_allowed(data_dir):
    rewrite(data_dir / "text", lambda ls: [ls[0].split()[0] + "\n"] + ls[1:])
    assert validate_data_dir(data_dir).ok, problems(data_dir)


@pytest.mark.parametrize("name, char", [
    ("text", "\x07"), ("text", "\t"), ("text_raw", "\x1b"), ("text", "\u2028"), ("text", "\ufeff"),
    ("wav.scp", "\x00"),
])
def test_non_printable_characters(data_dir, name, char):
    rewrite(data_dir / name, lambda ls: ls[:2] + [ls[2].rstrip("\n") + f"你{char}好\n"] + ls[3:])
    assert_problem(data_dir, f"{name}:3", "non-printable", f"U+{ord(char):04X}")


def test_invalid_utf8(data_dir):
    path = data_dir / "text"
    data = path.read_bytes().splitlines(keepends=True)
    data[1] = data[1][:-1] + b"\xe4\xbd\n"  # truncated multi-byte character
    path.write_bytes(b"".join(data))
    assert_problem(data_dir, "text:2", "not valid UTF-8")


def test_crlf_and_blank_line(data_dir):
    rewrite(data_dir / "utt2emo_audio", lambda ls: [ls[0].replace("\n", "\r\n"), "\n"] + ls[1:])
    lines = assert_problem(data_dir, "utt2emo_audio:1", "CR LF")
    assert any("utt2emo_audio:2" in line and "empty line" in line for line in lines)


def test_line_holding_only_a_bom(data_dir):
    # as an editor leaves a table it saved with a byte-order mark and a blank first line
    path = data_dir / "utt2emo_audio"
    path.write_bytes(b"\xef\xbb\xbf\n" + path.read_bytes())
    lines = assert_problem(data_dir, "utt2emo_audio:1", "byte-order mark")
    assert any("utt2emo_audio:1" in line and "empty line" in line for line in lines)
    result = fix_data_dir(data_dir)
    assert result.kept == 9 and result.removed == {}
    assert validate_data_dir(data_dir).ok


def test_ignored_and_unknown_files(data_dir):
    (data_dir / "notes").write_text("b\na\n")
    (data_dir / ".backup").mkdir()
    (data_dir / ".backup" / "text").write_text("zz\naa\n")
    report = validate_data_dir(data_dir)
    assert report.ok, report.problems.lines()
    assert report.not_checked == ["notes"]
    assert "excluded" not in report.checked and "meta.json" not in report.checked


def test_segments(tmp_path):
    d = tmp_path / "seg"
    d.mkdir()
    utt2spk = {"S01-r1-0001": "S01", "S01-r1-0002": "S01", "S02-r2-0001": "S02"}
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", {s: " ".join(u) for s, u in utt2spk_to_spk2utt(utt2spk).items()})
    write_table(d / "segments", {"S01-r1-0001": "r1 0.0 1.5", "S01-r1-0002": "r1 1.5 3.0", "S02-r2-0001": "r2 0 -1"})
    write_table(d / "wav.scp", {"r1": "/a b.wav", "r2": "/c.wav"})
    assert validate_data_dir(d).ok, problems(d)
    write_table(d / "wav.scp", {"r1": "/a b.wav", "r3": "/c.wav"})
    lines = assert_problem(d, "wav.scp", "used in segments are missing", "r2")
    assert any("recordings without segments" in line and "r3" in line for line in lines)
    write_table(d / "segments", {"S01-r1-0001": "r1 2.0 1.5", "S01-r1-0002": "r1 1.5 3.0", "S02-r2-0001": "r2 0 1"})
    assert_problem(d, "segments:1", "start < end")


# ---- fix_data_dir ----

def test_fix_removes_incomplete_utterances_and_reports(data_dir):
    originals = {name: (data_dir / name).read_bytes() for name in TABLES}
    rewrite(data_dir / "text", lambda ls: ls[:4] + ls[5:])                        # S02-..._002 missing
    rewrite(data_dir / "utt2dur", lambda ls: [ls[8].split()[0] + " 0\n"] + ls[:8])  # S13-..._003 bad + unsorted
    rewrite(data_dir / "wav.scp", lambda ls: [ls[1], ls[0], *ls[2:]])            # unsorted only
    broken = {name: (data_dir / name).read_bytes() for name in TABLES}
    result = shell(f'. ./path.sh && utils/fix_data_dir.sh "{data_dir}"')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "kept 7 of 9 utterances, removed 2" in out
    assert "1 utterance missing from text" in out and "1 utterance invalid value in utt2dur" in out
    assert "S02-G00002_01_02_002" in out and "S13-G00002_01_13_003" in out
    assert "now valid" in out and "7 utterances, 3 speakers" in out
    assert validate_data_dir(data_dir).ok
    keys = read_keys(data_dir / "utt2spk")
    assert "S02-G00002_01_02_002" not in keys and "S13-G00002_01_13_003" not in keys
    assert read_table(data_dir / "spk2utt")["S02"] == "S02-G00002_01_02_001 S02-G00002_01_02_003"
    # the originals are backed up, byte for byte
    for name in TABLES:
        backup = data_dir / ".backup" / name
        assert backup.read_bytes() == broken[name], name
    removed = (data_dir / ".backup" / "removed").read_text()
    assert "S02-G00002_01_02_002\tmissing from text" in removed
    # not tables: untouched
    assert (data_dir / "excluded").read_text().startswith("S99-zz")
    assert originals["utt2emo_audio"] != (data_dir / "utt2emo_audio").read_bytes()


def test_fix_is_idempotent_and_keeps_first_backup(data_dir):
    rewrite(data_dir / "utt2emo_audio", lambda ls: ls[1:])
    fix_data_dir(data_dir)
    backup = (data_dir / ".backup" / "utt2spk").read_bytes()
    result = fix_data_dir(data_dir)
    assert result.rewritten == [] and result.removed == {} and result.kept == 8
    assert (data_dir / ".backup" / "utt2spk").read_bytes() == backup


def test_fix_on_valid_dir_changes_nothing(data_dir):
    before = {p.name: p.read_bytes() for p in data_dir.iterdir()}
    result = fix_data_dir(data_dir)
    assert result.rewritten == [] and result.kept == 9
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before


def test_fix_drops_repeated_identical_lines_but_refuses_conflicting_ones(data_dir):
    rewrite(data_dir / "utt2emo_audio", lambda ls: ls[:1] + ls)
    result = fix_data_dir(data_dir)
    assert result.kept == 9 and any("repeated line" in n for n in result.notes)
    assert validate_data_dir(data_dir).ok
    rewrite(data_dir / "utt2emo_audio", lambda ls: ls + [ls[0].replace("happy", "sad")])
    before = (data_dir / "utt2emo_audio").read_bytes()
    result = shell(f'. ./path.sh && utils/fix_data_dir.sh "{data_dir}"')
    assert result.returncode == 1
    assert "appears twice with different values" in result.stderr and "S01-G00002_01_01_001" in result.stderr
    assert (data_dir / "utt2emo_audio").read_bytes() == before


def test_fix_speaker_missing_from_spk2gender(data_dir):
    write_table(data_dir / "spk2gender", {"S01": "m", "S02": "f", "S77": "m"})
    result = fix_data_dir(data_dir)
    assert result.kept == 6
    assert all(any("spk2gender" in c for c, _ in why) for why in result.removed.values())
    assert read_keys(data_dir / "spk2gender") == ["S01", "S02"]
    assert "S13" not in read_table(data_dir / "spk2utt")
    assert validate_data_dir(data_dir).ok


def test_fix_rebuilds_a_wrong_spk2utt(data_dir):
    good = (data_dir / "spk2utt").read_bytes()
    rewrite(data_dir / "spk2utt", lambda ls: [ls[0].replace(" S01-G00002_01_01_002", "")] + ls[2:])
    result = fix_data_dir(data_dir)
    assert result.rewritten == ["spk2utt"] and result.kept == 9
    assert (data_dir / "spk2utt").read_bytes() == good


def test_fix_rebuilds_utt2spk_from_spk2utt(data_dir):
    (data_dir / "utt2spk").unlink()
    result = fix_data_dir(data_dir)
    assert result.kept == 9
    assert validate_data_dir(data_dir).ok


def test_fix_refuses_spk2utt_listing_an_utterance_twice_without_utt2spk(data_dir):
    (data_dir / "utt2spk").unlink()
    rewrite(data_dir / "spk2utt", lambda ls: ls[:-1] + [ls[-1].rstrip("\n") + " S01-G00002_01_01_001\n"])
    before = (data_dir / "spk2utt").read_bytes()
    with pytest.raises(FixError, match="S01-G00002_01_01_001.*'S01' and 'S13'"):
        fix_data_dir(data_dir)
    assert (data_dir / "spk2utt").read_bytes() == before and not (data_dir / "utt2spk").exists()


def test_fix_reports_what_it_cannot_repair(data_dir):
    rewrite(data_dir / "text", lambda ls: [ls[0].rstrip("\n") + "\x07\n"] + ls[1:])
    result = shell(f'. ./path.sh && utils/fix_data_dir.sh "{data_dir}"')
    assert result.returncode == 1
    assert "cannot repair" in result.stderr and "text:1" in result.stderr and "non-printable" in result.stderr


def test_help_and_usage():
    for script in ("utils/validate_data_dir.sh", "utils/fix_data_dir.sh"):
        assert os.access(ROOT / script, os.X_OK)
        result = shell(f"{script} --help")
        assert result.returncode == 0 and "data-dir" in result.stdout
        result = shell(script)
        assert result.returncode == 1 and "Usage" in result.stderr


# ---- the corpus's table rules (--tables) ----

def test_without_rules_corpus_values_are_not_judged(data_dir):
    """The generic validator knows nothing of EmotionTalk's sentiment range: only the rules file does."""
    rewrite(data_dir / "utt2sentiment", lambda ls: ls[:4] + [ls[4].split()[0] + " 7.5\n"] + ls[5:])
    assert not problems(data_dir, rules=())
    assert any("[-2, 2]" in line for line in problems(data_dir))


def test_sparse_table_may_leave_utterances_out(data_dir):
    utts = read_keys(data_dir / "utt2spk")
    write_table(data_dir / "utt2caption_style", {u: "语速较快，音调偏高" for u in utts[::2]})
    assert not problems(data_dir), problems(data_dir)
    # without the rule it is an ordinary per-utterance table: the missing utterances are a problem
    assert any("utt2caption_style" in line and "missing" in line for line in problems(data_dir, rules=()))
    # but a key that is no utterance is always one
    table = read_table(data_dir / "utt2caption_style")
    table["S99-G00002_01_99_001"] = "x"
    write_table(data_dir / "utt2caption_style", table)
    assert any("not in utt2spk" in line for line in problems(data_dir))


def test_fix_keeps_utterances_absent_from_a_sparse_table(data_dir):
    utts = read_keys(data_dir / "utt2spk")
    write_table(data_dir / "utt2caption_style", {u: "语速较快" for u in utts[:2]})
    lines = (data_dir / "wav.scp").read_text().splitlines(keepends=True)
    (data_dir / "wav.scp").write_text("".join(lines[1:]))  # first utterance loses its audio
    result = fix_data_dir(data_dir, rules=RULES)
    assert result.kept == len(utts) - 1
    assert list(result.removed) == [utts[0]]
    assert read_keys(data_dir / "utt2caption_style") == [utts[1]]
    assert validate_data_dir(data_dir, rules=RULES).ok


@pytest.mark.parametrize("text, expect", [
    ("utt2x  bogus\n", "kind 'bogus'"),
    ("utt2x utt number 1\n", "expected 'pattern kind"),
    ("utt2x utt word 1 2\n", "for value type number"),
    ("utt2x utt number 3 1\n", "min <= max"),
])
def test_bad_rules_file_is_named(tmp_path, text, expect):
    f = tmp_path / "rules"
    f.write_text(text)
    with pytest.raises(RulesError, match=expect):
        read_rules(f)
    assert str(f) in str(pytest.raises(RulesError, read_rules, f).value)


def test_shell_wrapper_takes_tables(data_dir):
    rewrite(data_dir / "utt2sentiment", lambda ls: ls[:4] + [ls[4].split()[0] + " 7.5\n"] + ls[5:])
    ok = shell(f'. ./path.sh && utils/validate_data_dir.sh "{data_dir}"')
    assert ok.returncode == 0, ok.stderr
    bad = shell(f'. ./path.sh && utils/validate_data_dir.sh --tables conf/data_tables "{data_dir}"')
    assert bad.returncode == 1 and "[-2, 2]" in bad.stderr

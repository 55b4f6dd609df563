"""Stage 1 never dies on names, text, special files, loops, lying audio or a full disk, and never leaves a
half-written data dir; warnings start their own line in a log.

Each test builds a small release (tests/helpers_release.py), spoils one utterance and runs local/data_prep.py's
main as run.sh does; the bad utterance must be excluded with a reason (or the run must stop with one ERROR
line), the others kept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etser.datadir import read_table, staged_dir, write_table
from tests.helpers_disk import full_disk_after
from tests.helpers_release import media_dir, write_utterance

ROOT = Path(__file__).resolve().parents[1]
BASE = {"G00002_01_05_001": "train", "G00002_01_06_002": "train", "G00001_01_01_001": "val",
        "G00003_01_20_001": "test"}
BAD = "G00002_01_05_003"
BAD_UTT = f"S05-{BAD}"

_spec = importlib.util.spec_from_file_location("data_prep_cli_hardening", ROOT / "local" / "data_prep.py")
data_prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data_prep)


def make_release(root: Path) -> Path:
    for uid in BASE:
        write_utterance(root, uid, "happy")
    return root


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block blocks, e.g. on opening a named pipe."""
    def fail(*_):
        raise TimeoutError(f"blocked for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_stage(capsys, db: Path, out: Path, *args: str) -> tuple[int, str, str]:
    with deadline(60):
        rc = data_prep.main(["--db_root", str(db), "--out", str(out), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def excluded(out: Path, set_name: str | None = "train") -> dict[str, tuple[str, str]]:
    path = out / set_name / "excluded" if set_name else out / "excluded"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    return {uid: (file, why) for uid, file, why in rows}


def assert_only_bad_excluded(out: Path, reason: str, message: str, bad: str = BAD) -> tuple[str, str]:
    rows = excluded(out)
    assert list(rows) == [bad], rows
    file, why = rows[bad]
    assert why.startswith(f"{reason}: ") and message in why, why
    utts = read_table(out / "train" / "utt2spk")
    assert not any(bad in u for u in utts) and len(utts) == 2
    return file, why


def audio_bytes(fmt: str, subtype: str, seconds: float = 1.0, rate: int = 16000, samples=None) -> bytes:
    x = samples if samples is not None else (0.3 * np.sin(np.arange(int(seconds * rate)) / 7)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


# ---------------------------------------------------------------- names that are not UTF-8

def test_db_root_that_is_not_utf8_stops_with_one_line(tmp_path, capsys):
    db = make_release(tmp_path / os.fsdecode(b"release-\xff\xfe"))
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 1
    [line] = err.strip().splitlines()
    assert line.startswith("ERROR: local/data_prep.py: --db_root ") and "release-\\xff\\xfe is not valid UTF-8" in line
    assert not (tmp_path / "data" / "train" / "wav.scp").exists()


def test_folder_and_file_names_that_are_not_utf8_are_excluded_by_name(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    bad = "G00002_01_07_003"  # a speaker folder of its own
    bad_dir = os.fsdecode(b"G00002_01_07\xe9")  # a Latin-1 folder name: not UTF-8
    paths = write_utterance(db, bad, "happy")
    wav_dir = paths["wav"].parent
    os.rename(wav_dir, wav_dir.with_name(bad_dir))
    name = os.fsdecode(b"G00002_01_06_0\xff2.json")
    (media_dir(db, "text", "json") / "G00002" / name).write_text("{}")
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    file, why = assert_only_bad_excluded(tmp_path / "data", "non-UTF-8 path", "is not valid UTF-8", bad)
    assert "G00002_01_07\\xe9" in file and "G00002_01_07\\xe9" in why
    assert f"WARNING: excluding {bad}: non-UTF-8 path: the path " in err
    top = excluded(tmp_path / "data", None)
    assert top["G00002_01_06_0\\xff2"][1].startswith("bad file name: ")
    assert (tmp_path / "data" / "excluded").read_bytes().decode("utf-8")  # the list is valid UTF-8


# ---------------------------------------------------------------- text inside the JSON

@pytest.mark.parametrize("where", ["content", "caption"])
def test_lone_surrogate_in_a_json_string_is_excluded(tmp_path, capsys, where):
    db = make_release(tmp_path / "db")
    obj = {"emotion_result": "happy", "speaker_id": "05", "content": "你好",
           "sourceAttr": {"style": "平稳"}, "file_path": "x.wav"}
    raw = json.dumps(obj, ensure_ascii=True)
    raw = raw.replace("\\u4f60", "\\ud800") if where == "content" else raw.replace("\\u5e73", "\\udc00")
    write_utterance(db, BAD, "happy", raw_json={"audio": raw.encode()})
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    expected = "\\ud800 in content" if where == "content" else "\\udc00 in sourceAttr.style"
    assert_only_bad_excluded(tmp_path / "data", "bad JSON", f"Audio JSON holds a lone surrogate {expected}")


def test_control_characters_in_json_strings_stay_on_one_line(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    nasty = "a\u0000b\u001b[31mc\u0085d\u2028e\x0bf"
    write_utterance(db, BAD, "happy", content=nasty + "[over/]好[/over]",
                    caption={"speaker": nasty, "overall": "ok\u2029"})
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    d = tmp_path / "data" / "train"
    for name in ("text", "text_raw", "utt2caption"):
        lines = (d / name).read_bytes().decode("utf-8").split("\n")
        assert len(lines) == 4 and lines[-1] == "", name  # three utterances, three lines
        assert all(ch not in "".join(lines) for ch in "\x00\x1b\x85\u2028\u2029\x0b"), name
    assert read_table(d / "text")[BAD_UTT] == "a b 31mc d e f好"  # the lone bracket goes, as any
    assert json.loads(read_table(d / "utt2caption")[BAD_UTT])["speaker"] == nasty


# ---------------------------------------------------------------- special files and symlink loops

@pytest.mark.parametrize("kind", ["wav fifo", "wav socket", "json fifo", "json device"])
def test_special_files_are_never_opened(tmp_path, capsys, request, kind):
    db = make_release(tmp_path / "db")
    paths = write_utterance(db, BAD, "happy")
    target = paths["wav"] if kind.startswith("wav") else paths["video"]
    target.unlink()
    if kind.endswith("fifo"):
        os.mkfifo(target)
    elif kind.endswith("socket"):  # bound at a short path (AF_UNIX allows 107 bytes), linked from the release
        short = Path(tempfile.mkdtemp(dir="/tmp"))
        request.addfinalizer(lambda: shutil.rmtree(short))
        sock = socket.socket(socket.AF_UNIX)
        request.addfinalizer(sock.close)
        sock.bind(str(short / "s"))
        target.symlink_to(short / "s")
    else:
        target.symlink_to("/dev/zero")  # reading it never ends
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    if kind.startswith("wav"):
        what = "a named pipe" if kind == "wav fifo" else "a socket"
        assert_only_bad_excluded(tmp_path / "data", "not a file", f"the path is {what}, not an audio file")
    else:
        what = "a named pipe" if kind == "json fifo" else "a character device"
        assert_only_bad_excluded(tmp_path / "data", "bad JSON", f"Video JSON is {what}, not a file (not opened)")


def test_symlink_loop_is_named_and_not_a_duplicate(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    wav_root = media_dir(db, "audio", "wav")
    json_root = media_dir(db, "text", "json")
    (wav_root / "G00002" / "G00002_01" / "back").symlink_to("../..")       # -> Audio/wav
    (json_root / "G00001" / "again").symlink_to(json_root / "G00001")      # -> itself
    (db / "Audio" / "loop").symlink_to(db)                                 # the release inside itself
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert "duplicate uid" not in err and not (tmp_path / "data" / "excluded").read_text()
    assert f"WARNING: not searching {wav_root}/G00002/G00002_01/back: a symlink loop (it is the folder {wav_root} " \
           "again)" in err
    assert f"WARNING: not searching {json_root}/G00001/again: a symlink loop" in err
    assert len(read_table(tmp_path / "data" / "train" / "utt2spk")) == 2


# ---------------------------------------------------------------- audio that lies

@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_truncated_compressed_audio_is_excluded(tmp_path, capsys, fmt, subtype):
    """A FLAC or MP3 (behind a .wav name, as libsndfile reads by content) cut in half: its header still
    promises the full length."""
    db = make_release(tmp_path / "db")
    data = audio_bytes(fmt, subtype)
    write_utterance(db, BAD, "happy", wav=data[:len(data) // 2])
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert_only_bad_excluded(tmp_path / "data", "truncated audio", "the header declares 16000 frames but ")


def test_complete_compressed_audio_is_kept(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, BAD, "happy", wav=audio_bytes("FLAC", "PCM_16"))
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0 and not (tmp_path / "data" / "train" / "excluded").read_text()
    assert float(read_table(tmp_path / "data" / "train" / "utt2dur")[BAD_UTT]) == 1.0


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_float_wav_with_nan_or_inf_is_excluded(tmp_path, capsys, value):
    db = make_release(tmp_path / "db")
    x = np.zeros(8000, np.float32)
    x[5000] = value
    write_utterance(db, BAD, "happy", wav=audio_bytes("WAV", "FLOAT", samples=x))
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert_only_bad_excluded(tmp_path / "data", "bad samples", f"sample 5000 is {value} (NaN or infinity")


# ---------------------------------------------------------------- a full disk, atomic tables and sets

def test_disk_full_ends_with_one_line_and_leaves_no_partial_table(tmp_path, capsys, monkeypatch):
    import etser.datadir

    db = make_release(tmp_path / "db")
    out = tmp_path / "data"
    assert run_stage(capsys, db, out)[0] == 0  # a complete earlier run
    write_utterance(db, BAD, "sad")
    full_disk_after(monkeypatch, etser.datadir, 7)  # excluded lists, then the train set's 3rd table
    rc, stdout, err = run_stage(capsys, db, out)
    assert rc == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"ERROR: local/data_prep.py: cannot write {out}/train/text_raw: No space left") \
        and "; no data dir was left half written" in line, line
    assert "free space and rerun stage 1" in line
    for s in ("train", "val", "test"):  # no table of either run is left to be mistaken for a data dir
        assert not [p.name for p in (out / s).iterdir() if p.name != "excluded"], s
    assert not (out / "stats.md").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no staging folder, no temporary file
    monkeypatch.undo()
    assert run_stage(capsys, db, out)[0] == 0  # once there is space again, the rerun works
    assert len(read_table(out / "train" / "utt2spk")) == 3


def test_disk_full_at_the_first_file_is_one_line_too(tmp_path, capsys, monkeypatch):
    import etser.datadir

    db = make_release(tmp_path / "db")
    out = tmp_path / "data"
    full_disk_after(monkeypatch, etser.datadir, 0)
    rc, stdout, err = run_stage(capsys, db, out)
    assert rc == 1
    assert err.strip() == f"ERROR: local/data_prep.py: cannot write {out}/excluded: No space left on device"
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_write_table_failure_keeps_the_old_file_and_leaves_no_debris(tmp_path):
    path = write_table(tmp_path / "text", {"a": "1", "b": "2"})
    with pytest.raises(ValueError):
        write_table(path, {"a": "x", "b": "two\nlines"})
    assert read_table(path) == {"a": "1", "b": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_staged_dir_is_complete_or_untouched(tmp_path):
    d = tmp_path / "train"
    with staged_dir(d) as s:
        write_table(s / "wav.scp", {"u1": "/a.wav"})
        write_table(s / "text", {"u1": "hi"})
    assert sorted(p.name for p in d.iterdir()) == ["text", "wav.scp"]
    with pytest.raises(RuntimeError), staged_dir(d) as s:
        write_table(s / "wav.scp", {"u2": "/b.wav"})
        raise RuntimeError("interrupted after one table")
    assert read_table(d / "wav.scp") == {"u1": "/a.wav"} and (d / "text").exists()
    with staged_dir(d) as s:
        write_table(s / "wav.scp", {"u2": "/b.wav"})
    assert sorted(p.name for p in d.iterdir()) == ["wav.scp"]  # a set is replaced whole: no stale text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


# ---------------------------------------------------------------- logs

def test_warnings_start_their_own_line_in_a_log(tmp_path):
    """stderr to a file (a job log, `2>log`): no progress bar fragments before or inside the warnings."""
    db = make_release(tmp_path / "db")
    for i in range(3, 9):
        write_utterance(db, f"G00002_01_05_{i:03d}", {"audio": "happy", "text": "happy", "video": "bored",
                                                       "multi": "happy"})
    log = tmp_path / "stage1.log"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'local'}")
    with open(log, "wb") as f:
        r = subprocess.run([sys.executable, str(ROOT / "local" / "data_prep.py"), "--db_root", str(db),
                            "--out", str(tmp_path / "data")], stdout=subprocess.DEVNULL, stderr=f, env=env,
                           timeout=120)
    assert r.returncode == 0
    text = log.read_text(encoding="utf-8")
    assert "\r" not in text
    lines = text.splitlines()
    assert sum(line.startswith("WARNING: excluding ") for line in lines) == 6
    assert all(line.startswith(("WARNING: ", "NOTE: ")) for line in lines), lines

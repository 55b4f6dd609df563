"""The bad-input catalogue (docs/bad_input.md): what a user sees from ./run.sh for each kind of damaged
or wrong input.  One release holds every damaged utterance; the recipe runs on it once (stages 1-2, from a
working directory and a release whose paths contain spaces) and each test checks one entry's message and
outcome.  Errors that stop the recipe (upstream, checkpoint, stage order) get runs of their own.

The stage-1 unit tests (tests/test_data_prep.py) cover each exclusion rule in detail; here it is the whole
recipe from the user's side: the message on the console, the ``excluded`` entry, and the later stages going on
without the bad utterance.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from etser.datadir import read_table
from etser.features.upstream import config_tag
from tests.helpers_disk import full_disk_after
from tests.helpers_faults import make_workdir, run_recipe
from tests.helpers_release import rel_path, write_utterance

UPSTREAM = ("--upstream", "fbank_no_cmvn", "--nj", "1")
GOOD = {"G00002_01_05_001": "happy", "G00002_01_06_002": "sad", "G00004_01_07_001": "angry",
        "G00004_01_08_002": "neutral", "G00001_01_01_001": "happy", "G00001_01_02_002": "sad",
        "G00003_01_20_001": "angry", "G00003_01_21_002": "neutral"}


def wav(seconds=0.5, rate=16000, channels=1, subtype="PCM_16", freq=200.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t) * np.linspace(0.2, 1.0, t.size)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(x[:, None], channels, axis=1), rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def flac(seconds=0.5, rate=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(np.arange(int(seconds * rate)) / 5.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def float_wav_with(value: float) -> bytes:
    x = np.zeros(8000, np.float32)
    x[4000] = value
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


# uid -> (what is wrong, write_utterance arguments); all in group G00005 (train), speaker 09
CASES = {
    "missing wav": ("G00005_01_09_001", dict(wav=None)),
    "truncated wav": ("G00005_01_09_002", dict(wav=wav()[:-400])),
    "empty wav (0 bytes)": ("G00005_01_09_003", dict(wav=b"")),
    "empty wav (0 samples)": ("G00005_01_09_004", dict(wav=wav(0.0))),
    "unparseable JSON": ("G00005_01_09_005", dict(raw_json={"text": b'{"emotion_result": "happy",'})),
    "JSON with BOM": ("G00005_01_09_006", dict(bom=True)),
    "._ debris": ("G00005_01_09_007", dict(macos_debris=True)),
    "unknown label": ("G00005_01_09_008", dict(labels={"audio": "happy", "text": "happy", "video": "bored",
                                                       "multi": "happy"})),
    "duplicate uid": ("G00005_01_09_009", dict(wav_extra=("Audio/more/wav",))),
    "JSON without label": ("G00005_01_09_010", dict(fields={"multi": {"emotion_result": None}})),
    "8 kHz 8-bit": ("G00005_01_09_011", dict(wav=wav(rate=8000, subtype="PCM_U8", freq=300))),
    "48 kHz 24-bit stereo": ("G00005_01_09_012", dict(wav=wav(rate=48000, channels=2, subtype="PCM_24",
                                                              freq=400))),
    "44.1 kHz float stereo": ("G00005_01_09_013", dict(wav=wav(rate=44100, channels=2, subtype="FLOAT",
                                                               freq=500))),
    "named pipe as wav": ("G00005_01_09_014", {}),  # made a FIFO by the fixture
    "lone surrogate in JSON": ("G00005_01_09_015", dict(raw_json={"text": b'{"emotion_result": "happy", '
                                                                          b'"content": "\\ud800"}'})),
    "truncated FLAC behind .wav": ("G00005_01_09_016", dict(wav=flac()[:len(flac()) // 2])),
    "NaN in a float wav": ("G00005_01_09_017", dict(wav=float_wav_with(np.nan))),
    "44101 Hz wav": ("G00005_01_09_018", dict(wav=wav(rate=44101, freq=350))),
    "folder name not UTF-8": ("G00005_01_10_001", {}),  # its speaker folder renamed by the fixture
}
BAD_FOLDER = os.fsdecode(b"G00005_01_10\xe9")  # a Latin-1 name


def utt(uid: str) -> str:
    return f"S{uid.split('_')[2]}-{uid}"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    top = tmp_path_factory.mktemp("catalogue")
    db = top / "EmotionTalk release"
    for i, (uid, label) in enumerate(GOOD.items()):
        write_utterance(db, uid, label, wav=wav(freq=150.0 + 40 * i))
    for uid, kwargs in CASES.values():
        kwargs = dict(kwargs)
        kwargs.setdefault("wav", wav(freq=250.0))
        write_utterance(db, uid, kwargs.pop("labels", "happy"), **kwargs)
    wav_dir = db / "Audio" / "wav"
    fifo = wav_dir / rel_path(CASES["named pipe as wav"][0], ".wav")
    fifo.unlink()
    os.mkfifo(fifo)
    speaker_dir = (wav_dir / rel_path(CASES["folder name not UTF-8"][0], ".wav")).parent
    speaker_dir.rename(speaker_dir.with_name(BAD_FOLDER))
    (wav_dir / "G00005" / "loop").symlink_to("..")  # a symlink loop
    w = make_workdir(top / "my experiments")
    r = run_recipe(w, "--db_root", db, "--stop_stage", 2, *UPSTREAM)
    assert r.returncode == 0, r.stderr[-4000:]
    # stage 2 also extracts the captioner's upstream; the cases are read from the named one's dump
    tag = w / "dump" / config_tag(UPSTREAM[1], w / "conf" / "upstream")
    assert tag.is_dir(), sorted(p.name for p in (w / "dump").iterdir())
    with contextlib.chdir(w):  # the scp names its arks relative to the working directory
        feats = {k: np.array(v) for k, v in kaldiio.load_scp(str(tag / "train" / "pooled_mean.scp")).items()}
    return {"dir": w, "db": db, "stdout": r.stdout, "stderr": r.stderr, "feats": feats, "tag": tag}


def warning(recipe, uid: str) -> str:
    """The console line about uid (the one the user reads)."""
    lines = [line for line in recipe["stderr"].splitlines() if f"excluding {uid}:" in line]
    assert len(lines) == 1, f"expected one warning about {uid}, got {lines}"
    return lines[0][lines[0].index("WARNING:"):]


def excluded(recipe, uid: str) -> tuple[str, str]:
    """(file, reason) of uid's line in data/train/excluded."""
    rows = [line.split("\t") for line in (recipe["dir"] / "data/train/excluded").read_text().splitlines()]
    [(file, why)] = [(f, w) for u, f, w in rows if u == uid]
    return file, why


def assert_excluded(recipe, case: str, reason: str, message: str, file_part: str) -> None:
    uid = CASES[case][0]
    line = warning(recipe, uid)
    assert f"WARNING: excluding {uid}: {reason}: " in line and message in line, line
    file, why = excluded(recipe, uid)
    assert why.startswith(f"{reason}: ") and message in why
    assert file_part in file and file in line  # the file is named, on the console and in the list
    assert utt(uid) not in read_table(recipe["dir"] / "data/train/utt2spk")
    assert utt(uid) not in recipe["feats"]  # and the later stages go on without it


def assert_kept_quietly(recipe, case: str) -> None:
    uid = CASES[case][0]
    assert uid not in recipe["stderr"]
    assert utt(uid) in read_table(recipe["dir"] / "data/train/utt2spk")
    assert np.isfinite(recipe["feats"][utt(uid)]).all()


def test_summary_counts_every_exclusion(recipe):
    assert ("WARNING: 13 utterance(s) excluded (bad JSON: 2, bad samples: 1, duplicate uid: 1, empty audio: 1, "
            "missing audio: 1, no label: 1, non-UTF-8 path: 1, not a file: 1, truncated audio: 2, unknown label: 1, "
            "unreadable audio: 1); see data/excluded" in recipe["stderr"])
    assert "stage 1: 27 utterances found, 14 kept, 13 excluded" in recipe["stdout"]


def test_missing_wav(recipe):
    assert_excluded(recipe, "missing wav", "missing audio", "no WAV for this utterance (its JSON names "
                    "'G00005/G00005_01/G00005_01_09/G00005_01_09_001.wav')", "G00005_01_09_001.wav")


def test_truncated_wav(recipe):
    n = len(wav()) - 44
    assert_excluded(recipe, "truncated wav", "truncated audio",
                    f"the WAV header declares {n} bytes of samples but the file holds {n - 400}",
                    "G00005_01_09_002.wav")


def test_empty_wav(recipe):
    assert_excluded(recipe, "empty wav (0 bytes)", "unreadable audio", "Format not recognised",
                    "G00005_01_09_003.wav")
    assert_excluded(recipe, "empty wav (0 samples)", "empty audio", "the file holds 0 samples",
                    "G00005_01_09_004.wav")


def test_unparseable_json(recipe):
    assert_excluded(recipe, "unparseable JSON", "bad JSON", "Text JSON does not parse: Expecting property name",
                    "Text/json/G00005/G00005_01/G00005_01_09/G00005_01_09_005.json")


def test_json_with_bom_is_read_quietly(recipe):
    assert_kept_quietly(recipe, "JSON with BOM")


def test_macos_debris_is_ignored_quietly(recipe):
    assert list(Path(recipe["db"]).rglob("._G00005_01_09_007.json"))
    assert "._" not in recipe["stderr"]
    assert_kept_quietly(recipe, "._ debris")


def test_unknown_emotion_label(recipe):
    assert_excluded(recipe, "unknown label", "unknown label", "Video JSON emotion_result 'bored' is not one of "
                    "neutral, happy, sad, angry, surprised, disgusted, fearful", "Video/json/")


def test_duplicate_uid(recipe):
    assert_excluded(recipe, "duplicate uid", "duplicate uid", "WAV found 2 times: ", "G00005_01_09_009.wav")
    assert "Audio/more/wav/G00005/G00005_01/G00005_01_09/G00005_01_09_009.wav" in warning(recipe, "G00005_01_09_009")


def test_json_without_label(recipe):
    assert_excluded(recipe, "JSON without label", "no label", "Multimodal JSON has no emotion_result",
                    "Multimodal/json/")


def test_paths_with_spaces(recipe):
    assert " " in str(recipe["dir"]) and " " in str(recipe["db"])
    wav_scp = read_table(recipe["dir"] / "data/train/wav.scp")
    assert all(" " in path for path in wav_scp.values())
    assert sorted(recipe["feats"]) == sorted(wav_scp)  # every kept utterance has features


@pytest.mark.parametrize("case", ["8 kHz 8-bit", "48 kHz 24-bit stereo", "44.1 kHz float stereo", "44101 Hz wav"])
def test_other_rates_depths_and_channels_are_resampled(recipe, case):
    """Not 16-bit, not 16 kHz, stereo: kept, read at 16 kHz mono in stage 2 (100 fbank frames/s)."""
    assert_kept_quietly(recipe, case)
    u = utt(CASES[case][0])
    assert float(read_table(recipe["dir"] / "data/train/utt2dur")[u]) == pytest.approx(0.5, abs=1e-3)
    frames = int(read_table(recipe["tag"] / "train" / "utt2num_frames")[u])
    assert 48 <= frames <= 50


def test_named_pipe_is_not_opened(recipe):
    assert_excluded(recipe, "named pipe as wav", "not a file", "the path is a named pipe, not an audio file "
                    "(not opened)", "G00005_01_09_014.wav")


def test_lone_surrogate_in_json(recipe):
    assert_excluded(recipe, "lone surrogate in JSON", "bad JSON", "Text JSON holds a lone surrogate \\ud800 in "
                    "content, which is not a character (UTF-8 cannot hold it)", "G00005_01_09_015.json")


def test_truncated_flac(recipe):
    assert_excluded(recipe, "truncated FLAC behind .wav", "truncated audio", "the header declares 8000 frames "
                    "but the last of them cannot be decoded", "G00005_01_09_016.wav")


def test_nan_in_float_wav(recipe):
    assert_excluded(recipe, "NaN in a float wav", "bad samples", "sample 4000 is nan (NaN or infinity in a float "
                    "file)", "G00005_01_09_017.wav")


def test_folder_name_not_utf8(recipe):
    assert_excluded(recipe, "folder name not UTF-8", "non-UTF-8 path", "G00005_01_10\\xe9/G00005_01_10_001.wav "
                    "is not valid UTF-8 and a Kaldi table cannot hold it; rename the file or folder",
                    "G00005_01_10\\xe9")


def test_symlink_loop_is_named_once(recipe):
    lines = [line for line in recipe["stderr"].splitlines() if "symlink loop" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING: not searching "), lines
    assert lines[0].endswith("Audio/wav/G00005/loop: a symlink loop (it is the folder "
                             f"{recipe['db']}/Audio/wav again)")
    assert "duplicate uid: WAV found 2 times" in warning(recipe, CASES["duplicate uid"][0])  # the real one only
    assert sum(": duplicate uid: " in line for line in recipe["stderr"].splitlines()) == 1


def test_stage1_warnings_start_their_own_line(recipe):
    """stderr is a pipe here, as in a log file: no progress bar fragments before any stage-1 warning."""
    lines = [line for line in recipe["stderr"].split("\n") if "WARNING: " in line]
    assert sum(line.startswith("WARNING: excluding ") for line in lines) == 13  # one per excluded utterance
    assert all(line.startswith("WARNING: ") for line in lines), lines


def test_disk_full(recipe, tmp_path, capsys, monkeypatch):
    """A disk that fills up while stage 1 writes (simulated: ENOSPC from write())."""
    import etser.datadir

    spec = importlib.util.spec_from_file_location("data_prep_catalogue", Path(__file__).parents[1] / "local" /
                                                  "data_prep.py")
    data_prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_prep)
    full_disk_after(monkeypatch, etser.datadir, 5)
    out = tmp_path / "data"
    assert data_prep.main(["--db_root", str(recipe["db"]), "--out", str(out), "--sets", "train"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"ERROR: local/data_prep.py: cannot write {out}/train/text_raw: No space left on device; no "
                       "data dir was left half written (the sets and stats.md were removed): free space and rerun "
                       "stage 1")
    assert sorted(p.name for p in (out / "train").iterdir()) == ["excluded"]


def test_upstream_without_config(recipe):
    r = run_recipe(recipe["dir"], "--stage", 2, "--stop_stage", 2, "--upstream", "hubret_base")
    assert r.returncode != 0
    assert re.search(r"unknown upstream 'hubret_base': no conf/upstream/hubret_base\.yaml; available in "
                     r"conf/upstream/: .*\bhubert_base\b", r.stderr), r.stderr
    assert "Successfully finished" not in r.stderr


def test_config_naming_a_missing_checkpoint(recipe):
    r = run_recipe(recipe["dir"], "--stage", 2, "--stop_stage", 2, "--upstream", "hubert_base", "--nj", 1)
    assert r.returncode != 0
    where = recipe["dir"] / "downloads/models/chinese-hubert-base"
    assert "downloads/models/chinese-hubert-base not found" in r.stderr
    assert f"put it at {where}" in r.stderr
    assert "Download every file of https://huggingface.co/TencentGameMate/chinese-hubert-base" in r.stderr
    assert "Successfully finished" not in r.stderr


def test_stage3_before_features(tmp_path, recipe):
    """--stage 3 in a directory with data/ but no features: says to run stage 2 first."""
    w = make_workdir(tmp_path / "work")
    (w / "data").symlink_to(recipe["dir"] / "data")
    r = run_recipe(w, "--stage", 3, "--stop_stage", 3, *UPSTREAM)
    assert r.returncode != 0
    assert re.search(r"Stage 3: dump/fbank_no_cmvn_\w+/train has no features: run stage 2 for --upstream "
                     r"fbank_no_cmvn first", r.stderr), r.stderr[-2000:]
    assert not (w / "exp").exists() or not any((w / "exp").rglob("train.log"))


@pytest.mark.parametrize("args", [("--stage", "2a"), ("--stage", "0"), ("--stop_stage", "6"),
                                  ("--stage", "3", "--stop_stage", "2")])
def test_stage_range_outside_1_to_5_is_refused(tmp_path, args):
    """A stage that is not a number used to skip every stage and report "Successfully finished"."""
    w = make_workdir(tmp_path / "work")
    r = run_recipe(w, *args)
    assert r.returncode == 1, r.stderr
    assert "stages are 1 to 5 and stage <= stop_stage" in r.stderr
    assert "Successfully finished" not in r.stderr
    assert not (w / "data").exists()

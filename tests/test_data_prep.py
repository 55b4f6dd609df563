"""Stage 1 (local/emotiontalk/release.py, local/data_prep.py) on small release trees: outputs, quirks, bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest

from etser.datadir import read_table
from emotiontalk.release import clean_transcript, parse_speaker
from tests.helpers_release import media_dir, rel_path, wav_bytes, write_utterance

ROOT = Path(__file__).resolve().parents[1]
PER_UTT = ("wav.scp", "utt2spk", "text", "text_raw", "utt2emo_audio", "utt2emo_multi", "utt2emo_text",
           "utt2emo_video", "utt2sentiment", "utt2caption", "utt2dur")
# one utterance per set at least, two speakers in train
BASE = {"G00002_01_05_001": "train", "G00002_01_06_002": "train", "G00001_01_01_001": "val",
        "G00003_01_20_001": "test"}
BAD = "G00002_01_05_003"  # the utterance each bad-input test spoils (a train one)

_spec = importlib.util.spec_from_file_location("data_prep_cli", ROOT / "local" / "data_prep.py")
data_prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data_prep)


def make_release(root: Path, **quirks) -> Path:
    for uid in BASE:
        write_utterance(root, uid, "happy", **quirks)
    return root


def run_stage(capsys, db_root: Path, out: Path, *args: str) -> tuple[int, str, str]:
    rc = data_prep.main(["--db_root", str(db_root), "--out", str(out), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def excluded_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def check_kaldi_rules(set_dir: Path) -> None:
    """Sorted under LC_ALL=C (sort -c agrees), identical key sets, spk2utt from utt2spk."""
    env = dict(os.environ, LC_ALL="C")
    keys = None
    for name in PER_UTT + ("spk2utt",):
        path = set_dir / name
        if not path.exists():
            continue
        subprocess.run(["sort", "-c", "-u", "-k1,1", str(path)], check=True, env=env)
        table_keys = list(read_table(path))
        if name != "spk2utt":
            assert keys is None or table_keys == keys, name
            keys = table_keys
    utt2spk = read_table(set_dir / "utt2spk")
    assert all(u.startswith(s + "-") for u, s in utt2spk.items())
    spk2utt = {s: v.split() for s, v in read_table(set_dir / "spk2utt").items()}
    assert sorted(u for us in spk2utt.values() for u in us) == sorted(utt2spk)


# ---------------------------------------------------------------- transcripts

@pytest.mark.parametrize("raw,clean", [
    ("[over/]还给他点[/over]饭。", "还给他点饭。"),
    ("[over]对[over]啊", "对啊"),
    ("就是多做两次[over/]项目[[/over]。", "就是多做两次项目。"),
    ("[over/我敲您][/over]的门", "我敲您的门"),
    ("干嘛[over/呀[/over]？", "干嘛呀？"),
    ("公司的[over/]业绩[/over/]马上", "公司的业绩马上"),
    ("[over/]]不行[/over]，这", "不行，这"),
    ("[over/]嗯好好[/over]]。", "嗯好好。"),
    ("我就觉得[over[/over]]挺好的[[/over]over]。", "我就觉得挺好的。"),
    ("然后[interrupted]/over]。", "然后。"),
    ("【over/】好【/over】的", "好的"),
    ("[Sobbing]我不[crying]想[screaming]去[laughing]了", "我不想去了"),
    ("它cosplay的真的很好的[over/]那些[/over]。", "它cosplay的真的很好的那些。"),
    ("  两个\t空格\n之间  ", "两个 空格 之间"),
])
def test_clean_transcript_examples(raw, clean):
    assert clean_transcript(raw) == clean


def test_clean_transcript_on_every_real_transcript(meta_dir):
    """No tag survives on the 19,250 real transcripts, and every spoken character is kept."""
    with open(meta_dir / "transcription.csv", encoding="utf-8", newline="") as f:
        raws = [r["chinese"] for r in csv.DictReader(f)]
    assert len(raws) == 19250
    tag_words = re.compile(r"(?i)/\s*(over|interrupted|laughing|sobbing|crying|screaming)"
                           r"|(over|interrupted|laughing|sobbing|crying|screaming)\s*/")
    not_markup = re.compile(r"[A-Za-z\[\]【】/\s]")  # what may legitimately disappear
    for raw in raws:
        clean = clean_transcript(raw)
        assert not re.search(r"[\[\]【】]", clean), (raw, clean)
        assert not tag_words.search(clean), (raw, clean)
        assert not_markup.sub("", clean) == not_markup.sub("", raw), (raw, clean)
        # English words that are not markup survive
        for word in re.findall(r"[A-Za-z]+", re.sub(r"\[[^\]]*\]", "", raw)):
            if word.lower() not in ("over", "interrupted"):
                assert word in clean, (raw, clean)


def test_parse_speaker():
    assert parse_speaker(7) == parse_speaker("07") == parse_speaker(" 7 ") == parse_speaker(7.0) == 7
    assert parse_speaker("S07") is None and parse_speaker(True) is None and parse_speaker(None) is None


# ---------------------------------------------------------------- a good release

def test_outputs_of_a_small_release(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, "G00004_02_07_010", {"audio": "Angry", "text": "sad", "video": "FEARFUL ",
                                             "multi": "surprised"},
                    content="[over/]你好[/over]，[laughing]再见。", sentiment="-1.2",
                    caption={"speaker": "男", "overall": "大声\n说"})
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert "WARNING" not in err
    data = tmp_path / "data"
    train = data / "train"
    utt = "S07-G00004_02_07_010"
    wav = read_table(train / "wav.scp")
    assert wav[utt] == str(media_dir(db, "audio", "wav") / rel_path("G00004_02_07_010", ".wav"))
    assert Path(wav[utt]).is_absolute()
    assert read_table(train / "utt2spk")[utt] == "S07"
    assert read_table(train / "text")[utt] == "你好，再见。"
    assert read_table(train / "text_raw")[utt] == "[over/]你好[/over]，[laughing]再见。"
    assert {m: read_table(train / f"utt2emo_{m}")[utt] for m in ("audio", "text", "video", "multi")} == \
        {"audio": "angry", "text": "sad", "video": "fearful", "multi": "surprised"}
    assert read_table(train / "utt2sentiment")[utt] == "-1.2"
    assert json.loads(read_table(train / "utt2caption")[utt]) == {"speaker": "男", "overall": "大声\n说"}
    assert float(read_table(train / "utt2dur")[utt]) == pytest.approx(0.02)
    assert (train / "excluded").read_text() == "" and (data / "excluded").read_text() == ""
    assert sorted(read_table(data / "val" / "utt2spk")) == ["S01-G00001_01_01_001"]
    for s in ("train", "val", "test"):
        check_kaldi_rules(data / s)
    # kaldiio reads the same keys and audio
    scp = kaldiio.load_scp(str(train / "wav.scp"))
    assert list(scp) == list(wav)
    rate, samples = scp[utt]
    assert rate == 16000 and len(samples) == 320
    stats = (data / "stats.md").read_text(encoding="utf-8")
    assert stats in out
    assert "| train | G00002 G00004" in stats and "| Speech (utt2emo_audio) | 3 | 1 | 1 |" in stats
    assert re.search(r"stage 1: 5 utterances found, 5 kept, 0 excluded; [\d.]+ s", out)
    write_utterance(db, "G00004_02_07_011", "sad", content=" 第一行\n第二\t行 ", fields={"text": {"content": None}})
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    # no Text content: the Audio one; line breaks and tabs become spaces; a table value has no outer spaces
    utt2 = "S07-G00004_02_07_011"
    assert read_table(train / "text_raw")[utt2] == "第一行 第二 行" and read_table(train / "text")[utt2] == "第一行 第二 行"


def test_validate_data_dir_accepts_the_output(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, "G00002_01_05_004", "sad", content="[laughing]")  # empty transcript after cleaning
    assert run_stage(capsys, db, tmp_path / "data")[0] == 0
    assert read_table(tmp_path / "data/train/text")["S05-G00002_01_05_004"] == ""
    validate = ROOT / "utils" / "validate_data_dir.sh"
    assert validate.is_file(), "utils/validate_data_dir.sh is part of the recipe"
    for s in ("train", "val", "test"):
        r = subprocess.run([str(validate), str(tmp_path / "data" / s)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_harmless_quirks_are_silent(tmp_path, capsys):
    """Nested extraction, ._ files, BOM, file_name instead of file_path, integer speaker ids, spaces."""
    db = tmp_path / "my release" / "EmotionTalk 2025"
    for i, uid in enumerate(BASE):
        write_utterance(db, uid, "neutral", nested=True, macos_debris=True, bom=True,
                        int_speaker=i % 2 == 0, path_key="file_name")
    (db / "__MACOSX" / "Audio" / "json").mkdir(parents=True)
    (db / "__MACOSX" / "Audio" / "json" / "._G00002_01_05_001.json").write_bytes(b"\x00junk")
    (db / ".DS_Store").write_bytes(b"\x00")
    (db / "Video").rename(db / "EmotionTalk_Video")  # a tar named after the corpus too
    (db / "Multimodal").rename(db / "multi-modal")
    rc, out, err = run_stage(capsys, db, tmp_path / "out dir")
    assert rc == 0, err
    assert "WARNING" not in err and "ERROR" not in err
    assert "4 utterances found, 4 kept, 0 excluded" in out
    wav = read_table(tmp_path / "out dir" / "train" / "wav.scp")
    assert all(" " in p and Path(p).is_file() for p in wav.values())  # the value is the rest of the line
    for s in ("train", "val", "test"):
        check_kaldi_rules(tmp_path / "out dir" / s)


def test_only_audio_present_and_stale_files_removed(tmp_path, capsys):
    full, audio_only = make_release(tmp_path / "full"), tmp_path / "audio_only"
    for uid in BASE:
        write_utterance(audio_only, uid, "sad", modalities=("audio",), content="[over/]只有[/over]音频")
    out = tmp_path / "data"
    assert run_stage(capsys, full, out)[0] == 0
    assert (out / "train" / "utt2emo_video").exists()
    rc, stdout, err = run_stage(capsys, audio_only, out)
    assert rc == 0, err
    assert sorted(p.name for p in (out / "train").iterdir()) == \
        ["excluded", "spk2utt", "text", "text_raw", "utt2caption", "utt2caption_emotion", "utt2caption_overall",
         "utt2caption_speaker", "utt2caption_style", "utt2dur", "utt2emo_audio", "utt2spk", "wav.scp"]
    assert set(read_table(out / "train" / "text").values()) == {"只有音频"}  # from the Audio JSON content
    assert "Text (utt2emo_text)" not in stdout


def test_sets_option_and_empty_set(tmp_path, capsys):
    db = tmp_path / "db"
    write_utterance(db, "G00002_01_05_001", "happy")
    write_utterance(db, "G00003_01_20_001", "happy")
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 1
    assert "ERROR: local/data_prep.py: no usable utterance for set val (groups G00001 G00012)" in err
    assert not (tmp_path / "data" / "train" / "wav.scp").exists()
    rc, out, err = run_stage(capsys, db, tmp_path / "data2", "--sets", "train test")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "data2").iterdir()) == ["excluded", "release.json", "stats.md", "test",
                                                                     "train"]
    assert "No speaker is shared between sets." in out


def test_no_audio_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "db" / "Text" / "json").mkdir(parents=True)
    rc, out, err = run_stage(capsys, tmp_path / "db", tmp_path / "data")
    assert rc == 1
    assert "no Audio/json and Audio/wav folders found under" in err and "'text': ['json']" in err
    rc, out, err = run_stage(capsys, tmp_path / "nowhere", tmp_path / "data")
    assert rc == 1 and "is not a directory" in err


# ---------------------------------------------------------------- bad input

TRUNCATED = wav_bytes(0.1)[:-400]
BAD_CASES = {
    # name: (write_utterance arguments, reason, fragment of the message, file kind)
    "json does not parse": (dict(raw_json={"text": b'{"emotion_result": "happy",'}),
                            "bad JSON", "Text JSON does not parse: Expecting", "text"),
    "json not utf-8": (dict(raw_json={"video": '{"emotion_result": "happy"}'.encode("utf-16")}),
                       "bad JSON", "Video JSON not UTF-8", "video"),
    "json not an object": (dict(raw_json={"multi": b"[1, 2]"}), "bad JSON", "top level is a list", "multi"),
    "missing audio": (dict(wav=None), "missing audio", "no WAV for this utterance (its JSON names", "wav"),
    "unreadable audio": (dict(wav=b"RIFF this is no audio"), "unreadable audio", "Error opening", "wav"),
    "empty audio file": (dict(wav=b""), "unreadable audio", "Format not recognised", "wav"),
    "zero samples": (dict(wav=wav_bytes(0.0)), "empty audio", "the file holds 0 samples", "wav"),
    "truncated wav": (dict(wav=TRUNCATED), "truncated audio",
                      f"declares {len(wav_bytes(0.1)) - 44} bytes of samples but the file holds "
                      f"{len(TRUNCATED) - 44}", "wav"),
    "truncated extensible wav": (dict(wav=wav_bytes(0.1, fmt="WAVEX")[:-400]), "truncated audio",
                                 "bytes of samples but the file holds", "wav"),
    "unknown label": (dict(labels={"audio": "happy", "text": "happy", "video": "bored", "multi": "happy"}),
                      "unknown label", "Video JSON emotion_result 'bored' is not one of neutral, happy", "video"),
    "json without label": (dict(fields={"multi": {"emotion_result": None}}),
                           "no label", "Multimodal JSON has no emotion_result", "multi"),
    "empty label": (dict(labels={"audio": " ", "text": "happy", "video": "happy", "multi": "happy"}),
                    "no label", "Audio JSON has no emotion_result", "audio"),
    "speaker mismatch": (dict(fields={"audio": {"speaker_id": "08"}}), "speaker mismatch",
                         "the path says speaker 05, the Audio JSON speaker_id says '08'", "audio"),
    "missing json": (dict(modalities=("audio", "text", "multi")), "missing JSON", "no Video JSON", "video"),
    "bad sentiment": (dict(sentiment=3.5), "bad sentiment", "is 3.5, not a number in [-2, 2]", "multi"),
    "duplicate json": (dict(json_extra={"audio": ("Audio/Audio/json",)}), "duplicate uid",
                       "Audio JSON found 2 times", "audio"),
    "duplicate wav": (dict(wav_extra=("Audio/more/wav",)), "duplicate uid", "WAV found 2 times", "wav"),
}


def test_missing_sentiment_leaves_the_utterance_out_of_the_sentiment_task_only(tmp_path, capsys):
    """A Multimodal JSON without a sentiment: the utterance keeps its emotion labels (speech, text, visual,
    multi tasks), only utt2sentiment lacks it; a warning names it and the sentiment task counts it."""
    from etser.tasks import get_task

    db = make_release(tmp_path / "db")
    write_utterance(db, BAD, "sad", fields={"multi": {"Continuous label_result": None}})
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert (f"WARNING: keeping {BAD} without a sentiment: Multimodal JSON has no 'Continuous label_result'; only "
            "the tasks that need it leave it out (") in err
    assert "excluding" not in err
    train = tmp_path / "data" / "train"
    utt = f"S05-{BAD}"
    assert not (train / "excluded").read_text()
    for name in ("utt2spk", "wav.scp", "text", "utt2emo_audio", "utt2emo_text", "utt2emo_video", "utt2emo_multi"):
        assert utt in read_table(train / name), name
    assert utt not in read_table(train / "utt2sentiment")
    assert "| train | -0.400 | -0.4 | -0.4 | 1 |" in (tmp_path / "data" / "stats.md").read_text()
    r = subprocess.run([str(ROOT / "utils" / "validate_data_dir.sh"), "--tables", str(ROOT / "conf" / "data_tables"),
                        str(train)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    logged = []
    for task in ("speech_all", "text_all", "video_all", "multi_all"):
        assert utt in get_task(task).read_targets(train)[0], task
    utts, values, left_out = get_task("sentiment").read_targets(train, logged.append)
    assert utt not in utts and left_out == {"no value": 1}
    assert logged == [f"{train}/utt2sentiment: sentiment uses {len(utts)} utterances; left out 1 of "
                      f"{train}/utt2spk that have no value (first: {utt})"]


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_excluded_with_a_message(tmp_path, capsys, case):
    kwargs, reason, message, kind = BAD_CASES[case]
    kwargs = dict(kwargs)
    db = make_release(tmp_path / "db")
    paths = write_utterance(db, BAD, kwargs.pop("labels", "happy"), **kwargs)
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert f"WARNING: excluding {BAD}: {reason}: " in err and message in err
    lines = excluded_lines(tmp_path / "data" / "train" / "excluded")
    assert len(lines) == 1, lines
    uid, file, why = lines[0]
    assert uid == BAD and why.startswith(f"{reason}: ") and message in why
    if kind == "wav":
        assert Path(file).name == f"{BAD}.wav"
    else:
        assert file == str(paths.get(kind, media_dir(db, kind, "json") / rel_path(BAD, ".json")))
    assert excluded_lines(tmp_path / "data" / "excluded") == lines
    assert f"| {reason} | 1 |" in out  # the summary by reason in stats
    assert f"1 utterance(s) excluded ({reason}: 1)" in err
    assert "5 utterances found, 4 kept, 1 excluded" in out
    for s in ("train", "val", "test"):
        assert not any(BAD in k for k in read_table(tmp_path / "data" / s / "utt2spk"))
        assert (tmp_path / "data" / s / "excluded").exists()
        check_kaldi_rules(tmp_path / "data" / s)


def test_duplicate_uid_in_two_group_folders(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    p = write_utterance(db, BAD, "happy")["text"]
    elsewhere = media_dir(db, "text", "json") / "G00004" / f"{BAD}.json"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(p.read_bytes())
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0
    [[uid, file, why]] = excluded_lines(tmp_path / "data" / "train" / "excluded")
    assert uid == BAD and why.startswith("duplicate uid: Text JSON found 2 times")
    assert str(p) in why and str(elsewhere) in why


def test_unassignable_files_go_to_the_top_excluded_list(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, "G00016_01_05_001", "happy")
    notes = media_dir(db, "audio", "json") / "notes.json"
    notes.write_text("{}")
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert "WARNING: excluding G00016_01_05_001: unknown group: group G00016 is not one of" in err
    assert "WARNING: excluding notes: bad file name" in err
    top = excluded_lines(tmp_path / "data" / "excluded")
    assert [(u, w.split(":")[0]) for u, _, w in top] == [("G00016_01_05_001", "unknown group"),
                                                          ("notes", "bad file name")]
    assert top[1][1] == str(notes)
    assert all((tmp_path / "data" / s / "excluded").read_text() == "" for s in ("train", "val", "test"))


def test_several_problems_of_one_utterance_each_get_a_line(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, BAD, {"audio": "happy", "text": None, "video": "happy", "multi": "happy"}, wav=None)
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0
    reasons = [w.split(":")[0] for _, _, w in excluded_lines(tmp_path / "data" / "train" / "excluded")]
    assert sorted(reasons) == ["missing audio", "no label"]
    assert "1 utterance(s) excluded (missing audio: 1, no label: 1)" in err


def test_strict_turns_exclusions_into_failure(tmp_path):
    db = make_release(tmp_path / "db")
    write_utterance(db, BAD, "happy", raw_json={"audio": b"not json"})
    out = tmp_path / "data"
    cmd = [sys.executable, str(ROOT / "local" / "data_prep.py"), "--db_root", str(db), "--out", str(out)]
    r = subprocess.run(cmd + ["--strict", "true"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    assert f"WARNING: excluding {BAD}: bad JSON: Audio JSON does not parse" in r.stderr
    assert "ERROR: local/data_prep.py: --strict true: 1 utterance(s) excluded (bad JSON: 1)" in r.stderr
    assert not (out / "train" / "wav.scp").exists() and not (out / "stats.md").exists()
    assert excluded_lines(out / "train" / "excluded")[0][0] == BAD
    r = subprocess.run(cmd + ["--strict", "false"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "train" / "wav.scp").exists()
    r = subprocess.run(cmd + ["--strict", "maybe"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "expected true or false" in r.stderr


def test_many_exclusions_are_listed_in_full_but_printed_in_part(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    bad = [f"G00002_02_05_{t:03d}" for t in range(1, 14)]
    for uid in bad:
        write_utterance(db, uid, "happy", wav=None)
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0
    assert err.count("WARNING: excluding ") == 10
    assert f"WARNING: ... and 3 more 'missing audio' problems, all listed in {tmp_path / 'data' / 'excluded'}" in err
    assert [u for u, _, _ in excluded_lines(tmp_path / "data" / "train" / "excluded")] == bad

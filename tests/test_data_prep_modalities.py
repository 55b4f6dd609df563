"""Stage 1 per modality: video.scp, the per-kind caption files, the modality report and what a missing
part of the release rules out (local/emotiontalk/release.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from etser.datadir import read_table
from tests.helpers_release import media_dir, rel_path, write_utterance

ROOT = Path(__file__).resolve().parents[1]
BASE = ("G00002_01_05_001", "G00002_01_06_002", "G00001_01_01_001", "G00003_01_20_001")
CAPTION = {"speaker": "男性，青年，音调适中", "style": "语速较快，音量适中", "emotion": "开心",
           "overall": "一位青年男性飞快地说“你好”"}

_spec = importlib.util.spec_from_file_location("data_prep_cli", ROOT / "local" / "data_prep.py")
data_prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data_prep)


def write_mp4(root: Path, uid: str, data: bytes = b"\x00\x00\x00\x18ftypisom") -> Path:
    path = media_dir(root, "multi", "mp4") / rel_path(uid, ".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_release(root: Path, video: bool = True, **kwargs) -> Path:
    for uid in BASE:
        write_utterance(root, uid, "happy", caption=CAPTION, **kwargs)
        if video:
            write_mp4(root, uid)
    return root


def run_stage(capsys, db_root: Path, out: Path) -> tuple[int, str, str]:
    rc = data_prep.main(["--db_root", str(db_root), "--out", str(out)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_video_scp_beside_wav_scp(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    train = tmp_path / "data" / "train"
    video = read_table(train / "video.scp")
    assert list(video) == list(read_table(train / "wav.scp")) == ["S05-G00002_01_05_001", "S06-G00002_01_06_002"]
    assert video["S05-G00002_01_05_001"] == str(media_dir(db, "multi", "mp4") / rel_path("G00002_01_05_001", ".mp4"))
    assert "| video mp4 (Multimodal/mp4) | yes | `video.scp` |" in out
    assert "Every modality is present: no task is ruled out." in out
    assert "NOTE" not in err


def test_missing_or_empty_mp4_is_excluded_when_the_release_has_videos(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    write_utterance(db, "G00002_01_05_003", "sad", caption=CAPTION)                 # no mp4 at all
    write_utterance(db, "G00002_01_05_004", "sad", caption=CAPTION)
    write_mp4(db, "G00002_01_05_004", b"")                                          # an empty one
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    lines = sorted(line.split("\t") for line in (tmp_path / "data/train/excluded").read_text().splitlines())
    assert [(uid, reason.split(":")[0]) for uid, _, reason in lines] == [
        ("G00002_01_05_003", "missing video"), ("G00002_01_05_004", "empty video")]
    assert lines[0][1].endswith("mp4/G00002/G00002_01/G00002_01_05/G00002_01_05_003.mp4")
    assert "excluding G00002_01_05_003: missing video" in err
    train = tmp_path / "data" / "train"
    for name in ("video.scp", "wav.scp", "utt2caption_style"):
        assert len(read_table(train / name)) == 2, name
    assert "| missing video | 1 |" in out and "| empty video | 1 |" in out


def test_release_without_mp4_says_what_it_rules_out(tmp_path, capsys):
    db = make_release(tmp_path / "db", video=False)
    out_dir = tmp_path / "data"
    # a video.scp of an earlier run with videos must not survive
    assert run_stage(capsys, make_release(tmp_path / "with_video"), out_dir)[0] == 0
    assert (out_dir / "train" / "video.scp").exists()
    rc, out, err = run_stage(capsys, db, out_dir)
    assert rc == 0, err
    assert not (out_dir / "train" / "video.scp").exists()
    assert "NOTE: stage 1: no video mp4 (Multimodal/mp4): no visual features" in err
    assert "| video mp4 (Multimodal/mp4) | **no** |" in out
    assert "Ruled out by this release: no video mp4 (Multimodal/mp4): no visual features" in out
    assert not (out_dir / "train" / "excluded").read_text()


def test_release_without_text_json_rules_out_the_text_tasks(tmp_path, capsys):
    db = make_release(tmp_path / "db", modalities=("audio", "video", "multi"))
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert "NOTE: stage 1: no Text label (Text/json): no text_four, text_all" in err
    assert "NOTE: stage 1: no text (Text/json content)" in err
    assert "video mp4" not in err and "speech_four" not in err
    assert not (tmp_path / "data" / "train" / "utt2emo_text").exists()
    # the transcript then comes from the Audio JSON
    assert set(read_table(tmp_path / "data" / "train" / "text").values()) == {"你好，今天天气不错。"}


def test_caption_files_per_kind(tmp_path, capsys):
    db = make_release(tmp_path / "db")
    extra = {  # uid -> sourceAttr
        "G00002_01_05_003": {"speaker": "女性，中年", "style": "  ", "emotion": "悲伤", "overall": "她\n慢慢地说"},
        "G00002_01_05_004": {"speaker": "男性", "emotion": ["开心", "高兴"], "pitch": "高"},
        "G00002_01_05_005": None,                       # no sourceAttr at all
        "G00002_01_05_006": "女性，青年，语速较快",      # not an object
    }
    for uid, attr in extra.items():
        write_utterance(db, uid, "sad", fields={"audio": {"sourceAttr": attr}} if attr is not None else
                        {"audio": {"sourceAttr": None}})
        write_mp4(db, uid)
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    train = tmp_path / "data" / "train"
    tables = {k: read_table(train / f"utt2caption_{k}") for k in ("speaker", "style", "emotion", "overall")}
    assert set(tables["speaker"]) == {"S05-G00002_01_05_001", "S06-G00002_01_06_002", "S05-G00002_01_05_003",
                                      "S05-G00002_01_05_004"}
    assert tables["speaker"]["S05-G00002_01_05_003"] == "女性，中年"
    assert "S05-G00002_01_05_003" not in tables["style"]                 # empty: left out
    assert tables["overall"]["S05-G00002_01_05_003"] == "她 慢慢地说"     # one table line
    assert "S05-G00002_01_05_004" not in tables["emotion"]               # a list: left out, reported
    assert tables["style"]["S06-G00002_01_06_002"] == CAPTION["style"]
    # every utterance is kept and keeps its raw sourceAttr
    assert len(read_table(train / "utt2spk")) == 6 and len(read_table(train / "utt2caption")) == 6
    assert not (train / "excluded").read_text()
    # reported: the keys found, the counts, an example of each unexpected shape with uid, file and value
    assert ("Keys found (utterances): `emotion` (6), `overall` (5), `pitch` (1) not used, `speaker` (6), "
            "`style` (5)") in out
    assert "Without `sourceAttr`: 1 of 8." in out
    assert "| utt2caption_style | 2 | 1 | 1 | 1 | 0 |" in out
    assert "| utt2caption_emotion | 3 | 1 | 1 | 0 | 1 |" in out
    assert "`sourceAttr` not an object in 1 utterance(s)." in out
    assert "Example of an unexpected `emotion`: G00002_01_05_004 " in out and '["开心", "高兴"]' in out
    assert ("WARNING: G00002_01_05_006: sourceAttr is a str, not an object of captions" in err
            and "G00002_01_05_006.json" in err and '"女性，青年，语速较快"' in err)


def test_no_caption_anywhere_rules_out_captioning(tmp_path, capsys):
    db = tmp_path / "db"
    for uid in BASE:
        write_utterance(db, uid, "happy", fields={"audio": {"sourceAttr": None}})
        write_mp4(db, uid)
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    assert "NOTE: stage 1: no captions (Audio/json sourceAttr): no speaker-style captioning" in err
    assert not list((tmp_path / "data" / "train").glob("utt2caption_*"))
    assert read_table(tmp_path / "data" / "train" / "utt2caption")["S05-G00002_01_05_001"] == "{}"


def test_fifo_or_device_as_mp4_is_named_not_called_empty(tmp_path, capsys):
    import os

    db = make_release(tmp_path / "db")
    for uid in ("G00002_01_05_003", "G00002_01_05_004"):
        write_utterance(db, uid, "sad", caption=CAPTION)
    fifo = media_dir(db, "multi", "mp4") / rel_path("G00002_01_05_003", ".mp4")
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    (media_dir(db, "multi", "mp4") / rel_path("G00002_01_05_004", ".mp4")).symlink_to("/dev/zero")
    rc, out, err = run_stage(capsys, db, tmp_path / "data")
    assert rc == 0, err
    lines = sorted(line.split("\t") for line in (tmp_path / "data/train/excluded").read_text().splitlines())
    assert [(uid, reason) for uid, _, reason in lines] == [
        ("G00002_01_05_003", "not a file: the path is a named pipe, not a video file (not opened)"),
        ("G00002_01_05_004", "not a file: the path is a character device, not a video file (not opened)")]
    assert "empty video" not in err + out

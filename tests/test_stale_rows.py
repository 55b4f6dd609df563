"""RESULTS.md marks a row scored on inputs that changed since (labels relabelled, audio replaced while
stage 2 was skipped), says why and what to rerun; rows redone since are not marked."""

from __future__ import annotations

import os
from pathlib import Path

import soundfile as sf

from etser.datadir import read_table, write_table
from etser.features.extract import merge, run_job
from etser.report.results import write_results
from etser.learn.score import score_exp, stale_reasons
from etser.learn.train import load_config, train
from tests.test_extract import make_data

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "conf" / "upstream" / "fbank_no_cmvn.yaml"
LABELS = ["neutral", "happy", "sad", "angry"]


def _exp(root: Path, task: str) -> Path:
    return root / "exp" / "fb" / "superb" / task / "seed1"


def _train_and_score(root: Path, task: str) -> None:
    conf = load_config(ROOT / "conf" / "train" / "superb.yaml", ["max_epochs=2"])
    train(conf, task, root / "data", root / "dump" / "fb", _exp(root, task), 1)
    score_exp(_exp(root, task), ["test"])


def test_stale_rows_are_marked_with_why(tmp_path, monkeypatch):
    make_data(tmp_path, n=8, sets=("train", "val", "test"))
    monkeypatch.chdir(tmp_path)
    for s in ("train", "val", "test"):
        d = Path("data") / s
        utts = list(read_table(d / "wav.scp"))
        write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})
        write_table(d / "utt2emo_audio", {u: LABELS[i % 4] for i, u in enumerate(utts)})
        for j in (1, 2):
            run_job(UPSTREAM, d, Path("dump/fb") / s, nj=2, job=j)
        merge(UPSTREAM, d, Path("dump/fb") / s, 2)
    for task in ("speech_four", "speech_all"):
        _train_and_score(tmp_path, task)
    text = write_results(Path("exp"), Path("exp/RESULTS.md"), num_samples=10)
    assert "(stale)" not in text and "## Stale rows" not in text
    assert stale_reasons(_exp(tmp_path, "speech_all"), "test") == []

    # stage 1 on a relabelled release; the rerun redoes one task only (e.g. other --tasks)
    for s in ("train", "test"):
        path = Path("data") / s / "utt2emo_audio"
        table = read_table(path)
        first = next(iter(table))
        table[first] = "sad" if table[first] != "sad" else "happy"
        write_table(path, table)
    _train_and_score(tmp_path, "speech_four")
    text = write_results(Path("exp"), Path("exp/RESULTS.md"), num_samples=10)
    row = next(line for line in text.split("## UA", 1)[1].splitlines() if line.startswith("| fbank_no_cmvn"))
    four, all_ = row.rstrip(" |").split(" | ")[2:4]
    assert "(stale)" not in four and all_.endswith("(stale)"), row
    stale = text.split("## Stale rows", 1)[1].split("\n## ", 1)[0]
    assert "1 of 2 scorings were made from labels, features or data that changed since" in stale
    assert f"- `{Path('exp/fb/superb/speech_all/seed1')}`: scores: references: changed (" in stale
    assert "training: labels.train: changed (" in stale

    # audio replaced in place, stage 2 skipped: every row read those features
    _train_and_score(tmp_path, "speech_all")
    wav = next(iter(read_table(Path("data/train/wav.scp")).values()))
    x, sr = sf.read(wav)
    sf.write(wav, 0.5 * x, sr, subtype="PCM_16")
    os.utime(wav, ns=(1, 1))
    reasons = stale_reasons(_exp(tmp_path, "speech_four"), "test")
    assert reasons == [f"features {tmp_path / 'dump/fb/train'}: inputs: files changed in place "
                       "(size or modification time)"]
    text = write_results(Path("exp"), Path("exp/RESULTS.md"), num_samples=10)
    assert "2 of 2 scorings" in text

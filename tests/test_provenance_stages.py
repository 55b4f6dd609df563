"""Provenance through the stages: a changed input never reuses stale features, models or scores.

Stage 2 (etser.features.extract status + job markers), stage 3 (etser.learn.train) and stage 4 (etser.learn.score) each compare
what an output was made from with what its inputs are now; the recipe test runs ./run.sh the way a user
would: rerun with nothing changed (nothing is redone, and it says so), then after a label is corrected and
after audio is replaced in place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etser import provenance
from etser.datadir import read_table, write_table
from etser.features.extract import merge, run_job, status
from helpers_faults import FAST, make_workdir, run_recipe, stamps
from test_extract import make_data

ROOT = Path(__file__).resolve().parents[1]
FBANK = ROOT / "conf" / "upstream" / "fbank_no_cmvn.yaml"


def _extract(data: Path, out: Path, nj: int = 2) -> list[dict]:
    markers = [run_job(FBANK, data, out, nj, j) for j in range(1, nj + 1)]
    merge(FBANK, data, out, nj)
    return markers


def _redone(markers_before: list[dict], data: Path, out: Path, nj: int = 2) -> list[int]:
    """Rerun every job; the jobs that were redone (their job id changed)."""
    after = [run_job(FBANK, data, out, nj, j) for j in range(1, nj + 1)]
    merge(FBANK, data, out, nj)
    return [m["job"] for m, b in zip(after, markers_before) if m["job_id"] != b["job_id"]]


@pytest.fixture()
def extracted(tmp_path):
    data = make_data(tmp_path, n=6)
    out = tmp_path / "dump" / "train"
    markers = _extract(data, out)
    assert status(FBANK, data, out) == []
    return data, out, markers


def test_stage2_unchanged_is_up_to_date(extracted):
    data, out, markers = extracted
    assert _redone(markers, data, out) == []
    assert status(FBANK, data, out) == []


def test_stage2_audio_replaced_in_place(extracted):
    data, out, markers = extracted
    wav = read_table(data / "wav.scp")
    victim = sorted(wav)[-1]  # in job 2
    x, sr = sf.read(wav[victim])
    sf.write(wav[victim], x[::-1].copy(), sr)  # same path, other samples
    st = os.stat(wav[victim])
    os.utime(wav[victim], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert status(FBANK, data, out) == ["inputs: files changed in place (size or modification time)"]
    assert _redone(markers, data, out) == [2]
    assert status(FBANK, data, out) == []


def test_stage2_path_changed(extracted):
    data, out, markers = extracted
    wav = read_table(data / "wav.scp")
    first = sorted(wav)[0]
    moved = Path(wav[first]).with_name("moved.wav")
    shutil.copy2(wav[first], moved)
    wav[first] = str(moved)
    write_table(data / "wav.scp", wav)
    assert status(FBANK, data, out) == ["inputs: values changed (e.g. a path, a label or a transcript)"]
    assert _redone(markers, data, out) == [1]


def test_stage2_utterance_added_or_removed(extracted):
    data, out, _ = extracted
    for name in ("wav.scp", "utt2dur"):
        table = read_table(data / name)
        del table[sorted(table)[0]]
        write_table(data / name, table)
    assert status(FBANK, data, out) == ["inputs: the utterances changed (added or removed; 6 -> 5 entries)"]


def test_stage2_refuse_names_the_change(extracted):
    data, out, _ = extracted
    wav = read_table(data / "wav.scp")
    st = os.stat(wav[sorted(wav)[0]])
    os.utime(wav[sorted(wav)[0]], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    with pytest.raises(provenance.StaleError, match="files changed in place"):
        status(FBANK, data, out, on_change="refuse")


def test_stage2_config_edited(extracted, tmp_path):
    data, out, _ = extracted
    import yaml

    cfg = yaml.safe_load(FBANK.read_text())
    # another frame dtype: another config (its tag differs too, so run.sh never reuses the dir; here it is, on purpose)
    cfg["frames"] = {"layers": "all", "dtype": "float32" if cfg.get("frames", {}).get("dtype") == "float16"
                     else "float16"}
    edited = tmp_path / "fbank_no_cmvn.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    changes = status(edited, data, out)
    assert len(changes) == 1 and changes[0].startswith("config_hash: changed")


def test_stage2_older_dump_without_record_is_not_trusted(extracted):
    data, out, _ = extracted
    meta = json.loads((out / "meta.json").read_text())
    del meta["inputs"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert status(FBANK, data, out) == [
        "no record of what it was made from (made by an older version, or interrupted)"]


# ---------------------------------------------------------------- the recipe, as a user runs it

def _log_lines(r, w: Path | None = None) -> str:
    """What run.sh printed, plus its jobs' logs of this run (trainings and scorings log there)."""
    jobs = "".join(p.read_text() for p in sorted((w / "exp" / "log").glob("*.log"))) if w else ""
    return r.stdout + r.stderr + jobs


def _results(w: Path) -> str:
    """RESULTS.md without its generation time."""
    return "\n".join(line for line in (w / "exp" / "RESULTS.md").read_text().splitlines() if "do not edit" not in line)


def _exp_files(w: Path) -> dict[str, int]:
    return {k: v for k, v in stamps(w / "exp").items()
            if "log" not in Path(k).parts and not k.endswith(("jobs.txt", "RESULTS.md", ".run.lock"))}


def test_recipe_reruns_exactly_what_changed(tmp_path, small_release):
    w = make_workdir(tmp_path / "w")
    args = ("--db_root", small_release, *FAST)
    r = run_recipe(w, *args)
    assert r.returncode == 0, _log_lines(r)[-3000:]
    results = _results(w)
    dump0, exp0 = stamps(w / "dump"), _exp_files(w)

    # nothing changed: nothing is redone, and every stage says so
    r = run_recipe(w, "--stage", "2", *args)
    out = _log_lines(r, w)
    assert r.returncode == 0, out[-3000:]
    assert "complete and up to date, skipped" in out
    assert "and up to date; skipping" in out and "up to date (same model, references and features), kept" in out
    assert stamps(w / "dump") == dump0 and _exp_files(w) == exp0
    assert _results(w) == results

    # a test label corrected: the models stay, their test scores and RESULTS.md change
    exp_dir = next((w / "exp").glob("*/superb/speech_four/seed1"))
    preds = (exp_dir / "decode_test" / "predictions.txt").read_text().splitlines()
    labels = read_table(w / "data" / "test" / "utt2emo_audio")
    # an utterance the model gets right, relabelled to another of the four classes: its accuracy must drop
    right = next(line.split()[0] for line in preds[1:] if line.split()[1] == line.split()[2])
    labels[right] = next(c for c in ("neutral", "happy", "sad", "angry") if c != labels[right])
    write_table(w / "data" / "test" / "utt2emo_audio", labels)
    best = (exp_dir / "best.pt").read_bytes()
    r = run_recipe(w, "--stage", "3", *args)
    out = _log_lines(r, w)
    assert r.returncode == 0, out[-3000:]
    assert "rescoring, its inputs changed: references: changed" in out
    assert (exp_dir / "best.pt").read_bytes() == best  # not retrained: only the references changed
    assert _results(w) != results

    # a training label corrected: that training is redone, and rescored
    train_labels = read_table(w / "data" / "train" / "utt2emo_audio")
    u = sorted(train_labels)[0]
    train_labels[u] = next(c for c in ("neutral", "happy", "sad", "angry") if c != train_labels[u])
    write_table(w / "data" / "train" / "utt2emo_audio", train_labels)
    r = run_recipe(w, "--stage", "3", *args)
    out = _log_lines(r, w)
    assert r.returncode == 0, out[-3000:]
    assert "retraining from scratch, its inputs changed: labels.train: changed" in out
    assert (exp_dir / "best.pt").read_bytes() != best
    # the old decode dirs went with the old model: stage 4 scored the new one
    assert provenance.read(exp_dir / "decode_test" / provenance.FILE_NAME)["model"] == \
        provenance.content_identity(exp_dir / "best.pt")

    # --on_change refuse: audio replaced in place stops stage 2 naming the change, deleting nothing
    wav = read_table(w / "data" / "val" / "wav.scp")
    path = wav[sorted(wav)[0]]
    x, sr = sf.read(path)
    sf.write(path, np.clip(x * 0.5, -1, 1), sr)
    before = stamps(w / "dump")
    r = run_recipe(w, "--stage", "2", "--on_change", "refuse", *args)
    out = _log_lines(r)
    assert r.returncode != 0 and "out of date: inputs: files changed in place" in out, out[-3000:]
    assert stamps(w / "dump") == before
    # and by default the one job that read it is redone
    r = run_recipe(w, "--stage", "2", "--stop_stage", "2", *args)
    out = _log_lines(r)
    assert r.returncode == 0, out[-3000:]
    assert "to be (re)extracted: inputs: files changed in place" in out
    assert "already done" in "".join(p.read_text() for p in (w / "dump").glob("*/val/log/extract.*.log"))


# ---------------------------------------------------------------- unreadable audio in stage 2

def _break_one(data: Path) -> str:
    wav = read_table(data / "wav.scp")
    victim = sorted(wav)[2]
    Path(wav[victim]).write_bytes(Path(wav[victim]).read_bytes()[:60])  # a header promising more than is there
    return victim


def test_stage2_unreadable_audio_fails_naming_it_or_is_excluded_by_option(tmp_path):
    import yaml

    from etser.featset import Stream, drop_stage2_excluded

    data = make_data(tmp_path, n=6)
    victim = _break_one(data)
    wav = read_table(data / "wav.scp")
    with pytest.raises(Exception, match=rf"{victim}.*{Path(wav[victim]).name}|{Path(wav[victim]).name}.*{victim}"):
        run_job(FBANK, data, tmp_path / "fail", 1, 1)
    cfg = yaml.safe_load(FBANK.read_text())
    cfg["on_bad_input"] = "exclude"
    lenient = tmp_path / "fbank_exclude.yaml"
    lenient.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "dump" / "train"
    markers = [run_job(lenient, data, out, 2, j) for j in (1, 2)]
    assert sum(m["excluded"] for m in markers) == 1
    meta = merge(lenient, data, out, 2)
    assert meta["num_excluded"] == 1 and meta["num_utts"] == 5
    excluded = read_table(out / "excluded")
    assert list(excluded) == [victim] and wav[victim] in excluded[victim]
    assert victim not in read_table(out / "pooled_mean.scp")
    # stages 3-4 leave it out, saying so
    said = []
    utts, targets = drop_stage2_excluded(sorted(wav), np.arange(6), [Stream("speech", out.parent, (0,), "pooled")],
                                         "train", "data/train/utt2emo_audio", said.append)
    assert victim not in utts and len(targets) == 5
    assert "left out 1 utterance(s) that stage 2 excluded" in said[0]

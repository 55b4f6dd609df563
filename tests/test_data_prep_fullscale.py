"""Stage 1 on a full-size skeleton of the real release (../shared/emotiontalk-meta): the published figures.

The skeleton (19,250 utterances, four JSON each, tiny audio) is built once per session in a temp dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from etser.datadir import read_table
from emotiontalk.release import clean_transcript
from emotiontalk.labels import EMOTIONS_ALL, EMOTIONS_FOUR
from tests.helpers_release import build_skeleton_from_meta, read_meta

ROOT = Path(__file__).resolve().parents[1]
SETS = ("train", "val", "test")
SIZES = {"train": 15413, "val": 1908, "test": 1929}
# the four-class (A/H/N/S) sizes listed in ../shared/emotiontalk-meta/README.md
FOUR = {"multi": (12232, 1555, 1509), "audio": (13243, 1610, 1560), "video": (12985, 1565, 1663),
        "text": (11458, 1458, 1488)}
NPZ = {"multi": "mm", "audio": "audio", "video": "video", "text": "txt"}
SPEAKERS = {"train": {5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 17, 18, 19}, "val": {1, 2, 13, 15}, "test": {2, 13, 20, 21}}
TABLES = ("wav.scp", "utt2spk", "text", "text_raw", "utt2emo_audio", "utt2emo_multi", "utt2emo_text",
          "utt2emo_video", "utt2sentiment", "utt2caption", "utt2dur")


def scratch_dir(tmp_path_factory) -> Path:
    """A fresh folder for ~100,000 small files: in RAM (/dev/shm) when it has room, else pytest's tmp.

    Creating and removing that many files on a busy shared disk takes minutes; in tmpfs, seconds.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * 2**30:
        return Path(tempfile.mkdtemp(prefix="etser_fullscale_", dir=shm))
    return tmp_path_factory.mktemp("fullscale")


@pytest.fixture(scope="session")
def skeleton_run(meta_dir, tmp_path_factory):
    """(data dir, stdout of local/data_prep.py, meta rows) for the skeleton, built and prepared once."""
    base = scratch_dir(tmp_path_factory)
    db, data = base / "EmotionTalk", base / "data"
    assert build_skeleton_from_meta(meta_dir, db) == 19250
    spec = importlib.util.spec_from_file_location("data_prep_cli", ROOT / "local" / "data_prep.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["--db_root", str(db), "--out", str(data), "--strict", "true"])
    assert rc == 0, err.getvalue()[-2000:]
    yield data, out.getvalue(), read_meta(meta_dir)
    shutil.rmtree(base, ignore_errors=True)  # ~100,000 files: don't leave them to pytest's tmp retention


def test_split_sizes_speakers_and_no_exclusion(skeleton_run):
    data, out, _ = skeleton_run
    for s in SETS:
        utt2spk = read_table(data / s / "utt2spk")
        assert len(utt2spk) == SIZES[s]
        assert {int(v[1:]) for v in utt2spk.values()} == SPEAKERS[s]
        assert (data / s / "excluded").read_text() == ""
    assert "19250 utterances found, 19250 kept, 0 excluded" in out
    assert "val and test share S02, S13" in out
    assert "val and test share S02, S13" in (data / "stats.md").read_text(encoding="utf-8")


def test_multi_class_table_equals_the_dataset_readme(skeleton_run, meta_dir):
    data, out, _ = skeleton_run
    readme = (meta_dir / "EMOTIONTALK_README.md").read_text(encoding="utf-8")
    header = next(line for line in readme.splitlines() if line.startswith("|") and "Disgusted" in line)
    classes = [c.strip().lower() for c in header.strip("|").split("|")[1:-1]]
    assert sorted(classes) == sorted(EMOTIONS_ALL)
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\|\s*(Train|Val|Test)\b[^|]*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1).lower()] = [int(c) for c in m.group(2).split("|")]
    assert set(rows) == set(SETS)
    for s in SETS:
        counts = Counter(read_table(data / s / "utt2emo_multi").values())
        assert [counts[c] for c in classes] + [sum(counts.values())] == rows[s], s
        # the same row in stats.md (its columns are alphabetical like the README's)
        stats_row = f"| {s} | " + " | ".join(str(v) for v in rows[s]) + " |"
        assert stats_row in out


@pytest.mark.parametrize("source", list(FOUR))
def test_four_class_sizes_per_label_source(skeleton_run, meta_dir, source):
    data, out, _ = skeleton_run
    sizes = tuple(sum(v in EMOTIONS_FOUR for v in read_table(data / s / f"utt2emo_{source}").values())
                  for s in SETS)
    assert sizes == FOUR[source]
    npz = np.load(meta_dir / f"{NPZ[source]}_label4.npz", allow_pickle=True)
    assert sizes == tuple(len(npz[f"{s}_corpus"].item()) for s in SETS)
    assert re.search(rf"\| \w+ \(utt2emo_{source}\) \| {' | '.join(map(str, sizes))} \|", out)


def test_every_value_comes_from_the_official_files(skeleton_run, meta_dir):
    data, _, meta = skeleton_run
    codes = {}
    for s in SETS:
        for uid, v in np.load(meta_dir / "mm_label.npz", allow_pickle=True)[f"{s}_corpus"].item().items():
            codes[uid] = (s, EMOTIONS_ALL[v["emo"]], v["val"])
    seen = 0
    for s in SETS:
        tables = {name: read_table(data / s / name) for name in TABLES}
        for utt, spk in tables["utt2spk"].items():
            uid = utt.split("-", 1)[1]
            r = meta[uid]
            assert codes[uid][:2] == (s, r["multi"])
            for m in ("audio", "multi", "text", "video"):
                assert tables[f"utt2emo_{m}"][utt] == r[m]
            assert float(tables["utt2sentiment"][utt]) == pytest.approx(codes[uid][2], abs=1e-6)
            assert tables["text_raw"][utt] == r["content"].strip()  # a table value has no outer spaces
            assert tables["text"][utt] == clean_transcript(r["content"])
            assert Path(tables["wav.scp"][utt]).name == f"{uid}.wav"
            seen += 1
    assert seen == 19250


def test_data_dirs_pass_validation_and_sort(skeleton_run):
    data, _, _ = skeleton_run
    env = dict(os.environ, LC_ALL="C")
    for s in SETS:
        for name in TABLES + ("spk2utt",):
            subprocess.run(["sort", "-c", "-u", "-k1,1", str(data / s / name)], check=True, env=env)
    r = subprocess.run([str(ROOT / "utils" / "validate_data_dir.sh"), "--tables", str(ROOT / "conf" / "data_tables")]
                       + [str(data / s) for s in SETS],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

"""A dump read from another working dir gives its own features: stage 2 writes absolute ark paths, and a
relative ark path that would lead into another dump (dumps of older versions) is refused, named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etser.datadir import read_table, write_table
from etser.features.extract import merge, run_job
from etser.featset import load_stream
from tests.test_extract import make_data

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "upstream" / "fbank_no_cmvn.yaml"


def _working_dir(root: Path, gain: float) -> Path:
    """A working dir with data/train (6 utterances; the audio scaled by gain) and stage 2's dump/fb/train,
    extracted there with the relative paths run.sh uses."""
    data = make_data(root)
    for path in read_table(data / "wav.scp").values():
        x, sr = sf.read(path)
        sf.write(path, gain * x, sr, subtype="PCM_16")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_job(CONF, Path("data/train"), Path("dump/fb/train"), nj=2, job=1)
        run_job(CONF, Path("data/train"), Path("dump/fb/train"), nj=2, job=2)
        merge(CONF, Path("data/train"), Path("dump/fb/train"), 2)
    finally:
        os.chdir(cwd)
    return root / "dump" / "fb" / "train"


@pytest.fixture(scope="module")
def two_dirs(tmp_path_factory):
    a = _working_dir(tmp_path_factory.mktemp("wd a"), 1.0)
    b = _working_dir(tmp_path_factory.mktemp("wd b"), 0.05)
    return a, b


def _mean(set_dir: Path) -> np.ndarray:
    utts = list(read_table(set_dir / "pooled_mean.scp"))
    return load_stream(set_dir, utts, [0], "pooled").mean.numpy()


def test_a_dump_reads_the_same_from_any_working_dir(two_dirs, monkeypatch):
    a, b = two_dirs
    monkeypatch.chdir(a.parents[2])
    here = _mean(a)
    assert not np.allclose(here, _mean(b))  # the two dumps differ: reading the wrong one would show
    monkeypatch.chdir(b.parents[2])         # B's working dir holds an ark of the same name at A's path
    np.testing.assert_array_equal(_mean(a), here)
    monkeypatch.chdir("/")
    np.testing.assert_array_equal(_mean(a), here)


def test_relative_ark_paths_of_another_working_dir_are_refused(two_dirs, monkeypatch):
    """An scp as older versions wrote it (ark paths relative to the working dir of stage 2) reads right in
    that dir and is refused, named, from any other."""
    a, b = two_dirs
    wd = a.parents[2]
    set_dir = wd / "dump" / "legacy" / "train"
    shutil.copytree(a, set_dir)
    for name in ("pooled_mean.scp", "pooled_std.scp"):
        table = {u: v.replace(f"{a}/", "dump/legacy/train/") for u, v in read_table(a / name).items()}
        assert all(v.startswith("dump/legacy/train/split2/") for v in table.values())
        write_table(set_dir / name, table)
    monkeypatch.chdir(wd)
    np.testing.assert_array_equal(_mean(set_dir), _mean(a))
    monkeypatch.chdir(b.parents[2])
    with pytest.raises(ValueError, match=rf"{set_dir}/pooled_mean.scp: ark path dump/legacy/train/split2/"
                                         r"pooled_mean.1.ark is relative to the working dir that wrote it; .* a "
                                         r"dump of another working dir"):
        _mean(set_dir)

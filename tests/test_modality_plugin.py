"""A modality is one file: a test-only modality (tests/helpers_modality.py) registers itself and runs through
stage 2's one job runner into a dump the feature reader accepts; the stage-2 package names no modality
outside the modality files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest

import helpers_modality  # noqa: F401  (registers the tally modality)
from etser.featset import load_stream, read_meta
from etser.features import modality
from etser.features.extract import merge, run_job, status
from etser.features.upstream import config_tag, load_config

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"u1": "1 2 3", "u2": "-1 4", "u3": "not numbers", "u4": "5", "u5": "2 2 -2"}


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "tally").write_text("".join(f"{u} {v}\n" for u, v in ROWS.items()))
    conf = tmp_path / "conf" / "upstream" / "tally_square.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text("modality: tally\nname: square\nscale: 2.0\nframes: {layers: [1], dtype: float32}\n")
    return data, conf


def test_a_modality_from_one_file_runs_through_the_one_runner_into_a_valid_dump(tmp_path, capsys):
    data, conf = _setup(tmp_path)
    assert "tally" in modality.names()
    cfg = load_config(conf)
    assert cfg["modality"] == "tally" and cfg["scale"] == 2.0
    tag = config_tag(conf)
    out = tmp_path / "dump" / tag / "train"
    for job in (1, 2):
        run_job(conf, data, out, nj=2, job=job)
    log = capsys.readouterr().err
    assert "extract " in log and "(tally)" in log and "values" in log and "excluded: u3" in log
    meta = merge(conf, data, out, nj=2)
    assert meta["modality"] == "tally" and meta["num_layers"] == 2 and meta["dim"] == 3
    assert meta["num_utts"] == 4 and meta["num_excluded"] == 1 and meta["num_negative"] == 2
    assert meta["frame_layers"] == [1] and meta["time_axis"] == "values"
    assert read_meta(out)["config_hash"] == tag.rsplit("_", 1)[1]
    # the per-job tables are joined, the excluded one named with its file and reason
    assert (out / "excluded").read_text().startswith(f"u3 {data / 'tally'}\tnot numbers")
    assert (out / "negative").read_text() == "u2 1\nu5 1\n"
    assert (out / "utt2num_frames").read_text() == "u1 3\nu2 2\nu4 1\nu5 3\n"
    # the features are what the model gives: layer 0 = [x, x^2, 1] * 2 pooled over the values
    x = np.array([1.0, 2.0, 3.0])
    want = np.stack([x, x ** 2, np.ones(3)], axis=1) * 2
    mean = kaldiio.load_scp(str(out / "pooled_mean.scp"))["u1"]
    std = kaldiio.load_scp(str(out / "pooled_std.scp"))["u1"]
    np.testing.assert_allclose(mean, np.stack([want.mean(0), -want.mean(0)]), rtol=1e-6)
    np.testing.assert_allclose(std, np.stack([want.std(0), want.std(0)]), rtol=1e-6, atol=1e-7)
    frames = kaldiio.load_scp(str(out / "frames.scp"))["u1"]
    np.testing.assert_allclose(frames, -want, rtol=1e-6)
    # the learning side's reader takes it as it takes any other modality's dump
    got = load_stream(out, ["u1", "u2", "u4", "u5"], [0, 1], "pooled")
    assert got is not None
    # resumable and provenance-checked like every modality: an unchanged set is up to date, a changed value not
    assert status(conf, data, out) == []
    assert run_job(conf, data, out, nj=2, job=1)["job_id"] == json.loads((out / "split2" / "done.1").read_text())["job_id"]
    (data / "tally").write_text((data / "tally").read_text().replace("u4 5", "u4 6"))
    assert status(conf, data, out) != []


def test_an_unknown_modality_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(Exception, match="modality must be one of .*tally.*visual"):
        load_config({"modality": "smell", "name": "x"})


def _literals(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_stage_two_names_no_modality_outside_the_modality_files():
    shipped = set(modality.names()) - {"tally"}
    assert {"speech", "text", "visual"} <= shipped
    for path in sorted((ROOT / "etser" / "features").glob("*.py")):
        named = _literals(path) & shipped
        assert not named, f"{path.relative_to(ROOT)} names the modalities {sorted(named)}: a modality says it in its own file"

"""The feature-set reader: meta.json defaults and checks, and the one batch format (pooled, frames, several
streams, missing modality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from etser.featset import SCHEMA_VERSION, Stream, load_examples, load_stream, read_meta, write_meta
from tests.helpers_feats import make_frames, write_dump


@pytest.fixture()
def frames():
    rng = np.random.default_rng(0)
    return {f"S01-u{i}": make_frames(rng, i % 4, num_layers=3, dim=5, min_frames=3, max_frames=9) for i in range(6)}


def test_meta_defaults_and_checks(tmp_path, frames):
    write_dump(tmp_path / "a", frames, frame_layers=None)
    meta = read_meta(tmp_path / "a")
    assert meta["modality"] == "speech" and meta["schema_version"] == SCHEMA_VERSION
    # a meta.json of before modalities: the defaults
    old = {k: v for k, v in meta.items() if k not in ("modality", "schema_version")}
    (tmp_path / "a" / "meta.json").write_text(json.dumps(old))
    assert read_meta(tmp_path / "a")["modality"] == "speech" and read_meta(tmp_path / "a")["schema_version"] == 1
    (tmp_path / "a" / "meta.json").write_text(json.dumps({**old, "modality": "smell"}))
    with pytest.raises(ValueError, match="modality 'smell'"):
        read_meta(tmp_path / "a")
    (tmp_path / "a" / "meta.json").write_text(json.dumps({**old, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="newer than this reader"):
        read_meta(tmp_path / "a")
    with pytest.raises(ValueError, match="lacks dim"):
        write_meta(tmp_path / "a", {"upstream": "x", "config_hash": "0", "num_layers": 3})
    with pytest.raises(FileNotFoundError, match="run stage 2"):
        read_meta(tmp_path / "nothing")


def test_batch_format_pooled_and_frames(tmp_path, frames):
    write_dump(tmp_path / "dump" / "train", frames, frame_layers=(0, 2))
    utts = sorted(frames)[::-1]
    targets = np.arange(len(utts)) % 4
    ex = load_examples(utts, targets, [Stream("p", tmp_path / "dump", (2, 0), "pooled"),
                                       Stream("f", tmp_path / "dump", (2, 0), "frames")], "train")
    b = ex.batch([1, 3, 4])
    assert b["utts"] == [utts[1], utts[3], utts[4]]
    assert b["target"].dtype == torch.long and b["target"].tolist() == [1, 3, 0]
    p, f = b["streams"]["p"], b["streams"]["f"]
    assert p["mean"].shape == p["std"].shape == (3, 2, 5) and p["present"].all()
    for i, u in enumerate(b["utts"]):
        x = frames[u].astype(np.float64)[:, [2, 0]]   # layers in the order asked for
        assert np.allclose(p["mean"][i].numpy(), x.mean(0), atol=1e-6)
        assert np.allclose(p["std"][i].numpy(), x.std(0), atol=1e-6)
        n = frames[u].shape[0]
        assert f["lengths"][i].item() == n
        assert np.allclose(f["frames"][i, :n].numpy(), frames[u][:, [2, 0]])
        assert (f["frames"][i, n:] == 0).all()
    assert f["frames"].shape == (3, max(frames[u].shape[0] for u in b["utts"]), 2, 5)
    with pytest.raises(ValueError, match=r"not of \[1\]"):
        load_stream(tmp_path / "dump" / "train", utts, [1], "frames")


def test_two_streams_and_a_missing_modality(tmp_path, frames):
    write_dump(tmp_path / "speech" / "val", frames, frame_layers=None)
    some = {u: x for u, x in frames.items() if u != "S01-u2"}
    write_dump(tmp_path / "text" / "val", some, frame_layers=None, modality="text")
    assert read_meta(tmp_path / "text" / "val")["modality"] == "text"
    utts = sorted(frames)
    with pytest.raises(KeyError, match="S01-u2"):
        load_examples(utts, None, [Stream("text", tmp_path / "text", (0,))], "val", where="utt2emo_text")
    text = load_stream(tmp_path / "text" / "val", utts, [0, 1], "pooled", allow_missing=True)
    assert text.present.tolist() == [u != "S01-u2" for u in utts]
    assert (text.mean[utts.index("S01-u2")] == 0).all()
    ex = load_examples(utts, None, [Stream("speech", tmp_path / "speech", (0, 1, 2))], "val")
    ex.streams["text"] = text
    b = ex.batch(range(len(utts)))
    assert set(b["streams"]) == {"speech", "text"} and "target" not in b
    assert b["streams"]["speech"]["mean"].shape == (6, 3, 5) and b["streams"]["text"]["mean"].shape == (6, 2, 5)

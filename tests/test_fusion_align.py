"""MERBench's frame compression and text alignment, on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from etser.models.fusion.align import FEAT_SCALE, compress, map_length, pad_batch, prepare


def seq(*values):
    return np.array(values, dtype=np.float32)[:, None]


def test_map_length_by_hand():
    x = seq(1, 2, 3, 4, 5)
    np.testing.assert_allclose(map_length(x, 5), x)
    # shorter than the target: zeros in front
    np.testing.assert_allclose(map_length(x, 7).ravel(), [0, 0, 1, 2, 3, 4, 5])
    # exact multiple: plain mean of adjacent pairs
    np.testing.assert_allclose(map_length(seq(1, 2, 3, 4, 5, 6), 3).ravel(), [1.5, 3.5, 5.5])
    # 5 -> 2: pool 3, one zero in front: (0+1+2)/3, (3+4+5)/3
    np.testing.assert_allclose(map_length(x, 2).ravel(), [1.0, 4.0])
    # 5 -> 4: pool 2, three zeros in front: the first output frame is all zero (MERBench's behaviour)
    np.testing.assert_allclose(map_length(x, 4).ravel(), [0.0, 0.5, 2.5, 4.5])
    two_dims = np.stack([np.arange(1, 5), 10 * np.arange(1, 5)], 1)
    np.testing.assert_allclose(map_length(two_dims, 2), [[1.5, 15], [3.5, 35]])


def test_compress_by_factor():
    x = seq(*range(1, 14))  # 13 frames, factor 6 -> ceil(13/6) = 3 frames of pool 5 (2 zeros in front)
    out = compress(x, 6).ravel()
    np.testing.assert_allclose(out, [(0 + 0 + 1 + 2 + 3) / 5, (4 + 5 + 6 + 7 + 8) / 5, (9 + 10 + 11 + 12 + 13) / 5])
    np.testing.assert_allclose(compress(x, 1), x)
    assert FEAT_SCALE == {"utt": 1, "frm_align": 6, "frm_unalign": 12}


def test_prepare_modes():
    feats = {"text": np.ones((12, 2)), "speech": np.arange(48, dtype=float).reshape(24, 2),
             "visual": np.ones((3, 4))}
    utt = prepare(feats, "utt")
    assert {m: v.shape for m, v in utt.items()} == {"text": (2,), "speech": (2,), "visual": (4,)}
    np.testing.assert_allclose(utt["speech"], [23, 24])
    aligned = prepare(feats, "frm_align")  # text 12 -> 2 frames; speech 24 -> 4 -> 2; visual 3 -> 1 -> 2
    assert {m: v.shape for m, v in aligned.items()} == {"text": (2, 2), "speech": (2, 2), "visual": (2, 4)}
    np.testing.assert_allclose(aligned["speech"][:, 0], [np.arange(0, 48, 2)[:12].mean(), np.arange(0, 48, 2)[12:].mean()])
    np.testing.assert_allclose(aligned["visual"], [[0, 0, 0, 0], [1, 1, 1, 1]])  # front zero pad
    unaligned = prepare(feats, "frm_unalign")
    assert {m: len(v) for m, v in unaligned.items()} == {"text": 1, "speech": 2, "visual": 1}
    with pytest.raises(ValueError, match="no 'text' stream"):
        prepare({"speech": feats["speech"]}, "frm_align")
    with pytest.raises(ValueError, match="unknown feat_type"):
        prepare(feats, "frames")
    with pytest.raises(ValueError, match=r"shape \(0, 2\)"):
        map_length(np.zeros((0, 2)), 3)


def test_pad_batch_pads_at_the_end():
    batch, lengths = pad_batch([seq(1, 2, 3), seq(4)])
    assert lengths.tolist() == [3, 1]
    assert torch.equal(batch[..., 0], torch.tensor([[1.0, 2, 3], [4, 0, 0]]))

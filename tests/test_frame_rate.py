"""The frame rate of an upstream is measured from its feature encoder, not assumed; stitched windows are
checked against what one forward of the whole utterance gives."""

from __future__ import annotations

import numpy as np
import pytest

from etser.features.modalities.speech import iter_features
from etser.features.upstream import build_upstream, load_config


def _hubert_dir(path, strides):
    from transformers import HubertConfig, HubertModel

    from helpers_models import _save_w2v2_extractor

    import torch
    torch.manual_seed(0)
    kernels = (10, 3, 3, 3, 3, 2, 2)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                       do_stable_layer_norm=True, conv_dim=(16,) * 7, conv_stride=strides, conv_kernel=kernels)
    HubertModel(cfg).save_pretrained(path)
    _save_w2v2_extractor(path, normalize=True)
    return path


@pytest.fixture(scope="module")
def odd_stride_dir(tmp_path_factory):
    # 5*2*2*2*2*2*4 = 640 samples per frame: 25 frames/s, not the 50 of every HuBERT on the hub
    return _hubert_dir(tmp_path_factory.mktemp("hubert640"), (5, 2, 2, 2, 2, 2, 4))


def test_non_standard_stride_is_measured(odd_stride_dir, capsys):
    cfg = load_config({"name": "hf_hubert_custom", "ckpt": str(odd_stride_dir),
                       "batch": {"policy": "padded"}, "chunk": {"seconds": 2.0, "overlap": 1.0}})
    up = build_upstream(cfg)
    assert up.stride == 640 and up.frame_rate == 25.0
    assert "using 640" in capsys.readouterr().err  # the wrapper's declared 320 is overruled, and it says so


def test_chunked_frames_match_the_whole_forward(odd_stride_dir):
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(5.3 * 16000))).astype(np.float32)
    chunked = build_upstream(load_config({"name": "hf_hubert_custom", "ckpt": str(odd_stride_dir),
                                          "chunk": {"seconds": 2.0, "overlap": 1.0}}))
    whole = build_upstream(load_config({"name": "hf_hubert_custom", "ckpt": str(odd_stride_dir),
                                        "chunk": {"seconds": 60.0, "overlap": 4.0}}))
    (c,) = iter_features(chunked, [("u", wav)])
    (w,) = iter_features(whole, [("u", wav)])
    assert c.num_frames == w.num_frames == chunked.num_frames(len(wav))


def test_stitching_refuses_a_wrong_frame_count(odd_stride_dir):
    up = build_upstream(load_config({"name": "hf_hubert_custom", "ckpt": str(odd_stride_dir),
                                     "chunk": {"seconds": 2.0, "overlap": 1.0}}))
    up.stride = 320  # the old assumption: windows planned at 50 frames/s cannot stitch to the right count
    wav = np.zeros(int(5.3 * 16000), dtype=np.float32) + 0.01
    with pytest.raises(RuntimeError, match=r"utt7.*windows stitched to .* frames, but the whole|fewer than the kept"):
        list(iter_features(up, [("utt7", wav)], where=lambda u: f"utterance {u}"))

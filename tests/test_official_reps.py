"""The official representations (EmotionTalk / MERBench extractors) as config options, and the tags of
existing configs, which must not move."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from etser.upstream import config_tag, load_config
from etser.visual_encoders import build_visual_encoder
from helpers_video import face_video, tiny_image_model

REPO = Path(__file__).resolve().parents[1]

# dump/<tag> of configs whose features are unchanged: a new option or default must not move them
PINNED_TAGS = {
    "fbank_no_cmvn": "fbank_no_cmvn_923b8721",
    "hubert_base": "hubert_base_3718b0c8",
    "text_baseline": "text_baseline_0a5ddbde",
    "text_bert_base_chinese": "text_bert_base_chinese_e0fd00d9",
    "text_baichuan_7b": "text_baichuan_7b_12b951d1",
    "text_chatglm2_6b": "text_chatglm2_6b_f0c284ec",
    "visual_baseline": "visual_baseline_f9aa0de1",
    "visual_videomae_base": "visual_videomae_base_fbb79c42",
}


def test_tags_of_existing_configs_do_not_move():
    assert {n: config_tag(n) for n in PINNED_TAGS} == PINNED_TAGS


# the 2021-format preprocessor files of the real checkpoints, sizes shrunk to the tiny models' 32 px
CLIP_PREPROCESSOR = {"crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor",
                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                     "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 32}
BEIT_PREPROCESSOR = {"crop_size": 32, "do_center_crop": False, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "BeitFeatureExtractor", "image_mean": [0.5, 0.5, 0.5],
                     "image_std": [0.5, 0.5, 0.5], "reduce_labels": False, "resample": 2, "size": 32}


def tiny_clip_model(path: Path) -> Path:
    """A CLIPModel folder (both towers and projections, as openai/clip-vit-*), projection 24 != width 32."""
    import transformers as T

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    conf = T.CLIPConfig(text_config=dict(small, vocab_size=99, max_position_embeddings=16),
                        vision_config=dict(small, image_size=32, patch_size=8), projection_dim=24)
    T.CLIPModel(conf).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return path


def tiny_data2vec_ft1k(path: Path) -> Path:
    """data2vec-vision-base-ft1k's structure: an image-classification checkpoint (1000 labels shrunk to 5)."""
    import transformers as T

    torch.manual_seed(0)
    conf = T.Data2VecVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  image_size=32, patch_size=8, num_labels=5, use_mean_pooling=True)
    conf.architectures = ["Data2VecVisionForImageClassification"]
    T.Data2VecVisionForImageClassification(conf).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(BEIT_PREPROCESSOR))
    return path


def _frames(n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 40, 40, 3), dtype=np.uint8)


def _cfg(name: str, tmp: Path, ckpt: Path) -> dict:
    """The shipped config with its checkpoint moved to the tiny model."""
    user = yaml.safe_load((REPO / "conf/upstream" / f"{name}.yaml").read_text())
    return load_config({**user, "ckpt": str(ckpt)})


def test_clip_projected_image_embedding(tmp_path):
    from transformers import CLIPImageProcessor, CLIPModel

    ckpt = tiny_clip_model(tmp_path / "clip")
    for name in ("visual_clip_vit_b32", "visual_clip_vit_l14"):
        enc = build_visual_encoder(_cfg(name, tmp_path, ckpt))
        frames = _frames()
        (x,) = enc.encode([enc.prepare(frames)])
        model, proc = CLIPModel.from_pretrained(ckpt).eval(), CLIPImageProcessor.from_pretrained(ckpt)
        with torch.inference_mode():
            px = proc(images=list(frames), return_tensors="pt")["pixel_values"]
            ref = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        assert x.shape == (1, 5, 24)  # one layer: the projection's width, not the tower's
        np.testing.assert_allclose(x[0].numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    # today's representation stays selectable: CLS of every layer of the vision tower
    enc = build_visual_encoder(_cfg("visual_clip_vit_b32_layers", tmp_path, ckpt))
    assert enc.encode([enc.prepare(_frames())])[0].shape == (3, 5, 32)


@pytest.mark.parametrize("name,kind", [("visual_dinov2_large", "dinov2"), ("visual_dinov2_giant", "dinov2"),
                                       ("visual_data2vec_vision_base", "data2vec_ft1k")])
def test_last_layer_token_sum(tmp_path, name, kind):
    from transformers import AutoImageProcessor, AutoModel

    ckpt = tiny_image_model(kind, tmp_path / kind) if kind == "dinov2" else tiny_data2vec_ft1k(tmp_path / kind)
    cfg = _cfg(name, tmp_path, ckpt)
    assert cfg["args"] == {"token": "sum", "layers": "last"}
    enc = build_visual_encoder(cfg)
    frames = _frames()
    (x,) = enc.encode([enc.prepare(frames)])
    model, proc = AutoModel.from_pretrained(ckpt).eval(), AutoImageProcessor.from_pretrained(ckpt)
    with torch.inference_mode():
        px = proc(images=list(frames), return_tensors="pt")["pixel_values"]
        ref = torch.stack(model(px, output_hidden_states=True).hidden_states)[-1].sum(dim=1)
    assert x.shape == (1, 5, 32)
    np.testing.assert_allclose(x[0].numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    if kind == "data2vec_ft1k":  # the classification checkpoint's backbone weights were loaded
        from safetensors.torch import load_file

        saved = load_file(ckpt / "model.safetensors")
        key = next(k for k in saved if k.endswith("encoder.layer.0.attention.attention.query.weight"))
        np.testing.assert_array_equal(enc.model.encoder.layer[0].attention.attention.query.weight.detach().numpy(),
                                      saved[key].numpy())


def test_official_sampling_and_stage2(tmp_path):
    """Frame counts as the official code: DINOv2 64 uniform, CLIP and data2vec every frame; stage 2 runs the
    official CLIP config end to end (one layer of the projection's width)."""
    from etser.extract import merge, run_job
    from etser.datadir import read_table

    assert _cfg("visual_dinov2_large", tmp_path, tmp_path)["sampling"] == {"mode": "uniform", "value": 64}
    for name in ("visual_clip_vit_b32", "visual_clip_vit_l14", "visual_data2vec_vision_base"):
        assert _cfg(name, tmp_path, tmp_path)["sampling"]["mode"] == "all"
    ckpt = tiny_clip_model(tmp_path / "clip")
    data = tmp_path / "data"
    data.mkdir()
    (data / "video.scp").write_text(f"v0 {face_video(tmp_path / 'v0.mp4', 'happy', 0, n=6, size=64)}\n")
    cfg = {**_cfg("visual_clip_vit_b32", tmp_path, ckpt), "face": {"crop": "none", "size": 48}}
    run_job(cfg, data, tmp_path / "dump")
    meta = merge(cfg, data, tmp_path / "dump", 1)
    assert (meta["num_layers"], meta["dim"], meta["encoder"]["output"]) == (1, 24, "image_embeds")
    assert read_table(tmp_path / "dump" / "utt2num_frames") == {"v0": "6"}


def test_image_option_errors(tmp_path):
    from etser.upstream import UpstreamError

    ckpt = tiny_image_model("dinov2", tmp_path / "d")
    base = {"modality": "visual", "name": "hf_image", "ckpt": str(ckpt)}
    with pytest.raises(UpstreamError, match="args.token must be one of cls, mean, sum"):
        build_visual_encoder(load_config({**base, "args": {"token": "max"}}))
    with pytest.raises(UpstreamError, match="needs a model with get_image_features"):
        build_visual_encoder(load_config({**base, "args": {"output": "image_embeds"}}))

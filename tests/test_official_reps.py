"""The official representations (EmotionTalk / MERBench extractors) as config options, and the tags of
existing configs, which must not move."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from etser.features.upstream import config_tag, load_config
from etser.features.visual_encoders import build_visual_encoder
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
    "visual_baseline": "visual_baseline_79c22b7a",
    "visual_videomae_base": "visual_videomae_base_cc8ccd0f",
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
    from etser.features.extract import merge, run_job
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
    from etser.features.upstream import UpstreamError

    ckpt = tiny_image_model("dinov2", tmp_path / "d")
    base = {"modality": "visual", "name": "hf_image", "ckpt": str(ckpt)}
    with pytest.raises(UpstreamError, match="args.token must be one of cls, mean, sum"):
        build_visual_encoder(load_config({**base, "args": {"token": "max"}}))
    with pytest.raises(UpstreamError, match="needs a model with get_image_features"):
        build_visual_encoder(load_config({**base, "args": {"output": "image_embeds"}}))


# ---------------------------------------------------------------- text: the paper's DeBERTa and Vicuna

CHARS = "今天下午我们开会吃饭很开心高兴快乐太好了难过伤心哭失望生气愤怒讨厌烦真的是吗呢啊一个人去看电影"
TEXTS = {"a1": "今天下午我们开会", "a2": "开心", "a3": "难过", "a4": "我们一个人去看电影呢啊"}


def _text_stage2(name: str, ckpt: Path, tmp: Path) -> dict[str, np.ndarray]:
    import kaldiio

    from etser.datadir import read_table
    from etser.features.extract import merge, run_job

    data = tmp / "data"
    data.mkdir(exist_ok=True)
    (data / "text_raw").write_text("".join(f"{u} {t}\n" for u, t in sorted(TEXTS.items())), encoding="utf-8")
    user = yaml.safe_load((REPO / "conf/upstream" / f"{name}.yaml").read_text())
    cfg = load_config({**user, "ckpt": str(ckpt), "dtype": "float32"})
    run_job(cfg, data, tmp / "dump")
    merge(cfg, data, tmp / "dump", 1)
    return {u: np.asarray(kaldiio.load_mat(v)) for u, v in read_table(tmp / "dump" / "pooled_mean.scp").items()}


def tiny_deberta_chinese_large(path: Path) -> Path:
    """WENGSYX/Deberta-Chinese-Large's files: a DeBERTa (v1) config.json without architectures or tokenizer
    class, a BERT vocab.txt, empty tokenizer_config.json and special_tokens_map.json."""
    import transformers as T

    torch.manual_seed(0)
    path.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(CHARS))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    conf = {"model_type": "deberta", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
            "max_position_embeddings": 64, "relative_attention": True, "pos_att_type": "c2p|p2c",
            "layer_norm_eps": 1e-7, "max_relative_positions": -1, "position_biased_input": False,
            "num_attention_heads": 2, "num_hidden_layers": 2, "type_vocab_size": 0, "vocab_size": len(vocab)}
    T.DebertaModel(T.DebertaConfig(**conf)).save_pretrained(path)
    (path / "config.json").write_text(json.dumps(conf))
    (path / "tokenizer_config.json").write_text("{}")
    (path / "special_tokens_map.json").write_text("{}")
    return path


def test_official_deberta_checkpoint_with_its_bert_vocabulary(tmp_path):
    from transformers import AutoModel, AutoTokenizer, BertTokenizer

    ckpt = tiny_deberta_chinese_large(tmp_path / "deberta")
    # what its files alone give: a DeBERTa BPE tokenizer without its vocabulary, no token for the text
    assert AutoTokenizer.from_pretrained(ckpt)("开心", add_special_tokens=False)["input_ids"] == []
    mats = _text_stage2("text_deberta_large", ckpt, tmp_path)
    tok, model = BertTokenizer.from_pretrained(ckpt), AutoModel.from_pretrained(ckpt).eval()
    for utt, text in TEXTS.items():
        enc = tok(text, return_tensors="pt")
        with torch.inference_mode():
            hs = torch.stack(model(**enc, output_hidden_states=True).hidden_states)[:, 0]
        np.testing.assert_allclose(mats[utt], hs[:, 1:-1].mean(dim=1).numpy(), rtol=1e-4, atol=1e-5, err_msg=utt)


def test_official_vicuna_v0_folder(tmp_path):
    """vicuna-7b-v0 after applying the delta: a LLaMA folder with a SentencePiece tokenizer.model."""
    import transformers as T

    from helpers_remote_lm import sp_model

    ckpt = tmp_path / "vicuna-7b-v0"
    ckpt.mkdir()
    sp_model(ckpt / "tokenizer.model", "bpe")  # LLaMA's SentencePiece model is a BPE one
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                             "bos_token": "<s>", "eos_token": "</s>",
                                                             "unk_token": "<unk>"}))
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(ckpt)
    cfg = yaml.safe_load((REPO / "conf/upstream/text_vicuna_7b.yaml").read_text())
    assert cfg["ckpt"].endswith("vicuna-7b-v0") and "vicuna-7b-delta-v0" in cfg["download"]
    mats = _text_stage2("text_vicuna_7b", ckpt, tmp_path)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    base = T.LlamaModel.from_pretrained(ckpt).eval()
    for utt, text in TEXTS.items():
        ids = torch.tensor([[sp.bos_id()] + sp.encode(text)])
        with torch.inference_mode():
            hs = torch.stack(base(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0]
        np.testing.assert_allclose(mats[utt], hs[:, 1:].mean(dim=1).numpy(), rtol=1e-4, atol=1e-5, err_msg=utt)


# ---------------------------------------------------------------- EVA-02 through timm

EVA_SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # the real architecture, shrunk


def tiny_eva02(path: Path) -> Path:
    """A timm hub folder of eva02_base_patch14_224.mim_in22k (its config.json format, model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("eva02_base_patch14_224.mim_in22k", pretrained=False, num_classes=0, **EVA_SMALL)
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    cfg = {"architecture": "eva02_base_patch14_224", "num_classes": 0, "num_features": 32, "global_pool": "avg",
           "pretrained_cfg": {"tag": "mim_in22k", "input_size": [3, 224, 224], "interpolation": "bicubic",
                              "crop_pct": 0.9, "crop_mode": "center", "mean": [0.48145466, 0.4578275, 0.40821073],
                              "std": [0.26862954, 0.26130258, 0.27577711], "num_classes": 0}}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_eva02_through_timm_as_the_official_extractor(tmp_path):
    import timm
    from PIL import Image
    from safetensors.torch import load_file

    ckpt = tiny_eva02(tmp_path / "eva02")
    user = yaml.safe_load((REPO / "conf/upstream/visual_eva02_base.yaml").read_text())
    cfg = load_config({**user, "ckpt": str(ckpt), "args": {**user["args"], **EVA_SMALL}})
    enc = build_visual_encoder(cfg)
    frames = _frames(3)
    (x,) = enc.encode([enc.prepare(frames)])
    # the official code: create_model(..., num_classes=0), timm's eval transform on RGB PIL images, model(batch)
    model = timm.create_model("eva02_base_patch14_224.mim_in22k", pretrained=False, num_classes=0, **EVA_SMALL)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    with torch.inference_mode():
        ref = model(torch.stack([transform(Image.fromarray(f)) for f in frames]))
    assert x.shape == (1, 3, 32)
    np.testing.assert_allclose(x[0].numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="model.safetensors"):
        (ckpt / "model.safetensors").unlink()
        build_visual_encoder(cfg)


# ---------------------------------------------------------------- Whisper: the decoder-start-token features

def test_whisper_decoder_start_token_features(tmp_path):
    import soundfile as sf
    from transformers import WhisperFeatureExtractor, WhisperModel

    from etser.datadir import read_table
    from etser.features.extract import merge, run_job
    from etser.features.upstream import config_hash
    from helpers_models import tiny_whisper_dir

    ckpt = tiny_whisper_dir(tmp_path / "whisper")
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    wavs = {"w1": 0.1 * rng.standard_normal(16000 * 3), "w2": 0.1 * rng.standard_normal(16000 * 35),
            "w3": 0.1 * rng.standard_normal(12345)}
    for u, w in wavs.items():
        sf.write(tmp_path / f"{u}.wav", w.astype(np.float32), 16000)
    (data / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in sorted(wavs)))
    for name in ("whisper_base", "whisper_large"):
        user = yaml.safe_load((REPO / "conf/upstream" / f"{name}.yaml").read_text())
        assert user["factory"] == "etser.upstream:whisper_decoder" and user["args"]["layers"] == "last"
    user = yaml.safe_load((REPO / "conf/upstream/whisper_base.yaml").read_text())
    user["args"]["ckpt"] = str(ckpt)
    cfg = load_config(user)
    out = tmp_path / "dump"
    run_job(cfg, data, out)
    meta = merge(cfg, data, out, 1)
    assert (meta["num_layers"], meta["dim"]) == (1, 32)
    # the official extractor: the whole model, the first 30 s, decoder_input_ids = [[start, start]],
    # the decoder's last_hidden_state averaged over the two positions
    model, fe = WhisperModel.from_pretrained(ckpt).eval(), WhisperFeatureExtractor.from_pretrained(ckpt)
    import kaldiio

    for u, w in wavs.items():
        feats = fe(w, sampling_rate=16000, return_tensors="pt").input_features
        start = torch.tensor([[1, 1]]) * model.config.decoder_start_token_id
        with torch.inference_mode():
            ref = model(feats, decoder_input_ids=start).last_hidden_state[0].mean(dim=0)
        got = kaldiio.load_mat(read_table(out / "pooled_mean.scp")[u])
        np.testing.assert_allclose(got[0], ref.numpy(), rtol=1e-4, atol=1e-5, err_msg=u)
    assert read_table(out / "utt2num_frames") == {u: "2" for u in wavs}

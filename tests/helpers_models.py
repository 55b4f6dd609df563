"""Tiny randomly initialised upstream models, in the formats the shipped configs load.

No weights can be downloaded here, so every upstream family is tested on a model of the same code and the
same checkpoint format with a few dozen channels:

- S3PRL ``hubert_local`` / ``wav2vec2_local``: a converted-checkpoint dict
  ``{task_cfg, model_cfg, model_weight[, dictionaries_symbols]}`` (s3prl/upstream/*/convert.py);
- S3PRL ``wavlm_local``: ``{cfg, model}`` (s3prl/upstream/wavlm/expert.py);
- S3PRL ``hf_hubert_custom`` / ``hf_wav2vec2_custom``: a Hugging Face directory with ``config.json``,
  the weights and ``preprocessor_config.json`` (without it s3prl would try the network);
- Whisper: a Hugging Face directory for ``etser.upstream:whisper_encoder``.

``norm="group"`` gives the Base models' feature encoder (one GroupNorm over time in the first conv layer,
which is what makes padded batches differ, fairseq #3227); ``norm="layer"`` the Large models' one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

# 5 conv layers, total stride 320 and receptive field 400 samples like the real models (kernel, stride).
_CONV = "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2"
_DIM, _FFN, _HEADS, _LAYERS = 32, 64, 2, 2


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _save(state: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def tiny_hubert_ckpt(path: str | Path, norm: str = "group", seed: int = 0) -> Path:
    """A converted S3PRL HuBERT checkpoint (for ``hubert_local``)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    _seeded(seed)
    model_cfg = HubertConfig(
        label_rate=50, extractor_mode="default" if norm == "group" else "layer_norm",
        encoder_layers=_LAYERS, encoder_embed_dim=_DIM, encoder_ffn_embed_dim=_FFN,
        encoder_attention_heads=_HEADS, conv_feature_layers=_CONV, conv_pos=16, conv_pos_groups=4,
        final_dim=16, layer_norm_first=norm != "group")
    task_cfg = HubertPretrainingConfig(label_rate=50, normalize=norm != "group")
    symbols = [[str(i) for i in range(8)]]
    model = HubertModel(model_cfg, task_cfg, symbols)
    state = {"task_cfg": dataclasses.asdict(task_cfg), "model_cfg": dataclasses.asdict(model_cfg),
             "model_weight": model.state_dict(), "dictionaries_symbols": symbols}
    return _save(state, path)


def tiny_wav2vec2_ckpt(path: str | Path, norm: str = "group", seed: int = 0) -> Path:
    """A converted S3PRL wav2vec 2.0 checkpoint (for ``wav2vec2_local``)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model

    _seeded(seed)
    model_cfg = Wav2Vec2Config(
        extractor_mode="default" if norm == "group" else "layer_norm",
        encoder_layers=_LAYERS, encoder_embed_dim=_DIM, encoder_ffn_embed_dim=_FFN,
        encoder_attention_heads=_HEADS, conv_feature_layers=_CONV, conv_pos=16, conv_pos_groups=4,
        final_dim=16, latent_vars=8, latent_groups=2, layer_norm_first=norm != "group")
    task_cfg = AudioPretrainingConfig(normalize=norm != "group")
    model = Wav2Vec2Model(model_cfg)
    state = {"task_cfg": dataclasses.asdict(task_cfg), "model_cfg": dataclasses.asdict(model_cfg),
             "model_weight": model.state_dict()}
    return _save(state, path)


def tiny_wavlm_ckpt(path: str | Path, norm: str = "group", seed: int = 0) -> Path:
    """A WavLM checkpoint in the released format (for ``wavlm_local``)."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    _seeded(seed)
    cfg = {"extractor_mode": "default" if norm == "group" else "layer_norm",
           "encoder_layers": _LAYERS, "encoder_embed_dim": _DIM, "encoder_ffn_embed_dim": _FFN,
           "encoder_attention_heads": _HEADS, "conv_feature_layers": _CONV, "conv_pos": 16,
           "conv_pos_groups": 4, "layer_norm_first": norm != "group", "normalize": norm != "group",
           "relative_position_embedding": True, "num_buckets": 32, "max_distance": 64,
           "gru_rel_pos": True}
    model = WavLM(WavLMConfig(cfg))
    return _save({"cfg": cfg, "model": model.state_dict()}, path)


def _hf_conv_kwargs() -> dict:
    return {"conv_dim": (16,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_kernel": (10, 3, 3, 3, 3, 2, 2)}


def _save_w2v2_extractor(path: Path, normalize: bool) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                             do_normalize=normalize, return_attention_mask=True).save_pretrained(path)


def tiny_hf_dir(path: str | Path, family: str = "hubert", norm: str = "group", seed: int = 0) -> Path:
    """A Hugging Face HuBERT or wav2vec 2.0 directory (for ``hf_hubert_custom`` / ``hf_wav2vec2_custom``).

    ``norm="group"`` mirrors chinese-hubert-base / chinese-wav2vec2-base (``feat_extract_norm: group``),
    ``norm="layer"`` the Large ones (``layer`` + ``do_stable_layer_norm``).
    """
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    _seeded(seed)
    common = dict(hidden_size=_DIM, num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
                  intermediate_size=_FFN, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", **_hf_conv_kwargs())
    if family == "hubert":
        model = HubertModel(HubertConfig(**common))
    elif family == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(codevector_dim=16, proj_codevector_dim=16, **common))
    else:
        raise ValueError(family)
    path = Path(path)
    model.save_pretrained(path)
    _save_w2v2_extractor(path, normalize=norm == "layer")
    return path


def tiny_whisper_dir(path: str | Path, seed: int = 0) -> Path:
    """A Hugging Face Whisper directory (encoder and a one-layer decoder) with its feature extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    _seeded(seed)
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=_DIM, encoder_layers=_LAYERS,
                        encoder_attention_heads=_HEADS, encoder_ffn_dim=_FFN, decoder_layers=1,
                        decoder_attention_heads=_HEADS, decoder_ffn_dim=_FFN, max_source_positions=1500,
                        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    path = Path(path)
    WhisperModel(cfg).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path

"""A tiny emotion2vec folder in the format users download (FunASR / ModelScope / the Hugging Face mirror):
``config.yaml`` with the real keys (FunASR's ``funasr/models/emotion2vec/template.yaml``, sizes shrunk),
``configuration.json``, ``tokens.txt`` and ``model.pt`` holding ``{"model": state_dict}`` under FunASR's
parameter names, written here key by key from that naming (not from etser's module), random values."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

EMBED, HEADS, DEPTH, PRENET, EXTRA, CONV = 32, 4, 2, 1, 3, 16
SPEC = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] + [(16,2,2)]"
CONV_LAYERS = [(CONV, 10, 5)] + [(CONV, 3, 2)] * 4 + [(CONV, 2, 2)] * 2
POS_WIDTH, POS_DEPTH, POS_GROUPS = 10, 2, 4
LABELS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral", "其他/other",
          "难过/sad", "吃惊/surprised", "<unk>"]
NUM_LAYERS = 1 + PRENET + DEPTH


def model_conf() -> dict:
    """FunASR's emotion2vec model_conf keys, small sizes."""
    return {
        "loss_beta": 0.0, "loss_scale": None, "depth": DEPTH, "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0, "num_heads": HEADS, "norm_eps": 1e-05, "norm_affine": True,
        "encoder_dropout": 0.1, "post_mlp_drop": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "dropout_input": 0.0, "layerdrop": 0.05, "embed_dim": EMBED, "mlp_ratio": 4.0, "layer_norm_first": False,
        "average_top_k_layers": DEPTH, "end_of_block_targets": False, "clone_batch": 8,
        "layer_norm_target_layer": False, "batch_norm_target_layer": False, "instance_norm_target_layer": True,
        "instance_norm_targets": False, "layer_norm_targets": False, "ema_decay": 0.999, "ema_same_dtype": True,
        "log_norms": True, "ema_end_decay": 0.99999, "ema_anneal_end_step": 20000, "ema_encoder_only": False,
        "max_update": 100000, "extractor_mode": "layer_norm", "shared_decoder": None, "min_target_var": 0.1,
        "min_pred_var": 0.01, "supported_modality": "AUDIO", "mae_init": False, "seed": 1, "skip_ema": False,
        "cls_loss": 1.0, "recon_loss": 0.0, "d2v_loss": 1.0, "decoder_group": False,
        "adversarial_training": False, "adversarial_hidden_dim": 128, "adversarial_weight": 0.1,
        "cls_type": "chunk", "normalize": True,
        "modalities": {"audio": {
            "type": "AUDIO", "prenet_depth": PRENET, "prenet_layerdrop": 0.05, "prenet_dropout": 0.1,
            "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0, "num_extra_tokens": EXTRA,
            "init_extra_token_zero": True, "mask_noise_std": 0.01, "mask_prob_min": None, "mask_prob": 0.5,
            "inverse_mask": False, "mask_prob_adjust": 0.05, "keep_masked_pct": 0.0, "mask_length": 5,
            "add_masks": False, "remove_masks": False, "mask_dropout": 0.0, "encoder_zero_mask": True,
            "mask_channel_prob": 0.0, "mask_channel_length": 64, "ema_local_encoder": False,
            "local_grad_mult": 1.0, "use_alibi_encoder": True, "alibi_scale": 1.0, "learned_alibi": False,
            "alibi_max_pos": None, "learned_alibi_scale": True, "learned_alibi_scale_per_head": True,
            "learned_alibi_scale_per_layer": False, "num_alibi_heads": HEADS, "model_depth": DEPTH,
            "decoder": {"decoder_dim": 8, "decoder_groups": 4, "decoder_kernel": 3, "decoder_layers": 1,
                        "input_dropout": 0.1, "add_positions_masked": False, "add_positions_all": False,
                        "decoder_residual": True, "projection_layers": 1, "projection_ratio": 2.0},
            "extractor_mode": "layer_norm", "feature_encoder_spec": SPEC, "conv_pos_width": POS_WIDTH,
            "conv_pos_groups": POS_GROUPS, "conv_pos_depth": POS_DEPTH, "conv_pos_pre_ln": False,
        }},
    }


def _block_keys(prefix: str, d: int) -> dict[str, tuple]:
    h = int(d * 4.0)
    return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
            f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
            f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
            f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
            f"{prefix}.mlp.fc1.weight": (h, d), f"{prefix}.mlp.fc1.bias": (h,),
            f"{prefix}.mlp.fc2.weight": (d, h), f"{prefix}.mlp.fc2.bias": (d,)}


def funasr_shapes(plus: bool = True) -> dict[str, tuple]:
    """Parameter names and shapes of FunASR's Emotion2vec for model_conf() (decoder and + classifier included)."""
    a, shapes, c_in = "modality_encoders.AUDIO", {}, 1
    for i, (dim, k, _) in enumerate(CONV_LAYERS):
        shapes[f"{a}.local_encoder.conv_layers.{i}.0.weight"] = (dim, c_in, k)
        shapes[f"{a}.local_encoder.conv_layers.{i}.2.1.weight"] = (dim,)
        shapes[f"{a}.local_encoder.conv_layers.{i}.2.1.bias"] = (dim,)
        c_in = dim
    shapes.update({f"{a}.project_features.1.weight": (CONV,), f"{a}.project_features.1.bias": (CONV,),
                   f"{a}.project_features.2.weight": (EMBED, CONV), f"{a}.project_features.2.bias": (EMBED,)})
    k = max(3, POS_WIDTH // POS_DEPTH)
    for j in range(1, POS_DEPTH + 1):
        shapes[f"{a}.relative_positional_encoder.{j}.0.weight"] = (EMBED, EMBED // POS_GROUPS, k)
        shapes[f"{a}.relative_positional_encoder.{j}.0.bias"] = (EMBED,)
    for i in range(PRENET):
        shapes.update(_block_keys(f"{a}.context_encoder.blocks.{i}", EMBED))
    shapes.update({f"{a}.context_encoder.norm.weight": (EMBED,), f"{a}.context_encoder.norm.bias": (EMBED,),
                   f"{a}.extra_tokens": (1, EXTRA, EMBED), f"{a}.alibi_scale": (1, 1, HEADS, 1, 1),
                   f"{a}.decoder.blocks.0.0.weight": (8, EMBED // 4, 3), f"{a}.decoder.blocks.0.0.bias": (8,),
                   f"{a}.decoder.proj.weight": (EMBED, 8), f"{a}.decoder.proj.bias": (EMBED,)})
    for i in range(DEPTH):
        shapes.update(_block_keys(f"blocks.{i}", EMBED))
    if plus:
        shapes.update({"proj.weight": (len(LABELS), EMBED), "proj.bias": (len(LABELS),)})
    return shapes


def random_state(seed: int = 0, plus: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in funasr_shapes(plus).items():
        if name.endswith("alibi_scale"):
            state[name] = 0.5 + torch.rand(shape, generator=g)   # learned scales stay positive
        elif ".norm" in name and name.endswith("weight") or name.endswith(".2.1.weight") or ".project_features.1.weight" in name:
            state[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[name] = 0.2 * torch.randn(shape, generator=g)
    return state


def tiny_emotion2vec_dir(path: str | Path, seed: int = 0, plus: bool = True) -> Path:
    """Write the folder; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    conf = {"model": "Emotion2vec", "model_conf": model_conf()}
    if plus:
        conf.update({"tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True}})
    (path / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False), encoding="utf-8")
    meta = {"framework": "pytorch", "task": "emotion-recognition", "model": {"type": "emotion2vec"},
            "file_path_metas": {"init_param": "model.pt", "config": "config.yaml"}}
    if plus:
        meta["file_path_metas"]["tokenizer_conf"] = {"token_list": "tokens.txt"}
        (path / "tokens.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (path / "configuration.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    torch.save({"model": random_state(seed, plus)}, path / "model.pt")
    return path

"""A captioner's training config (conf/caption/<decoder>.yaml): defaults, overrides, checks.

Cheap to import (the decoders' module, with torch, is imported when a config is checked), so that the
recipe's planning can check every decoder's config and local model dir before any job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from etser.learn import config as learn_config

DEFAULTS = {
    "decoder": None,               # transformer | gpt2 | qwen2 | bart
    "decoder_dir": None,           # local Hugging Face dir (pretrained decoders)
    "tokenizer_dir": None,         # pretrained decoders: its tokenizer, when not in decoder_dir
    "decoder_conf": {},
    "adaptor_conf": {"hidden_dim": 256, "downsample": 2, "kind": "conv", "dropout": 0.1, "normalize": True},
    "layers": "all",               # frame layers used (weighted sum): all dumped ones, one int, or a list
    "tokenizer_unit": "auto",      # from-scratch decoder: auto (char for Chinese, word otherwise) | char | jieba | word
    "min_token_count": 1,
    "max_caption_tokens": 64,      # longer captions are truncated (counted in train.log)
    "freeze_decoder": False,       # pretrained decoders: train only the adaptor (and new cross-attention)
    "optim": "adamw",
    "optim_conf": {"lr": 1.0e-3},
    "batch_size": 16,
    "grad_clip": 1.0,
    "max_epochs": 30,
    "patience": 10,
    "select_metric": None,         # val_loss | bleu4 | rouge_l | cider_d (greedy decoding of the val set); none:
                                   # the caption task kind's default (etser.tasks.caption)
    "decode_conf": {"num_beams": 3, "max_len": 40, "length_penalty": 1.0},
    "keep_checkpoints": 2,
    "average_last": None,          # N: the model decoded is the mean of the last N epochs' weights (not the best
                                   # epoch on val); needs keep_checkpoints >= N
    "preload_frames_gb": 2.0,      # hold a set's frames in memory up to this size, else read them per batch
    "train_set": "train",
    "valid_set": "val",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides (the one loader), then the decoder's checks."""
    conf = learn_config.load_config(path, overrides, DEFAULTS)
    decoder_class(conf, path)
    if conf["select_metric"] is not None:
        from etser.tasks.caption import CaptionTask

        CaptionTask.select_metric(conf["select_metric"])
    n = conf["average_last"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2 or n > int(conf["max_epochs"])
                          or n > int(conf["keep_checkpoints"])):
        raise ValueError(f"{path or 'caption config'}: average_last must be null or an integer from 2 to max_epochs "
                         f"({conf['max_epochs']}) and at most keep_checkpoints ({conf['keep_checkpoints']}), "
                         f"got {n!r}")
    check_decoder_dir(conf)
    return conf


def decoder_class(conf: dict, path: Path | None = None) -> type:
    """The registered class of ``conf["decoder"]`` (etser.models.decoders), or an error naming the known ones."""
    from etser import models

    names = models.names("decoder")
    if conf["decoder"] not in names:
        raise ValueError(f"{path or 'config'}: decoder must be one of {', '.join(names)}, got {conf['decoder']!r}")
    return models.get("decoder", conf["decoder"])


def check_decoder_dir(conf: dict) -> None:
    """A pretrained decoder's dir must exist before any work (one message)."""
    if decoder_class(conf).own_tokenizer:
        return
    d = conf.get("decoder_dir")
    if not d or not (Path(d) / "config.json").is_file():
        raise FileNotFoundError(f"decoder {conf['decoder']}: decoder_dir {d!r} is not a local Hugging Face model "
                                "directory (config.json, weights, tokenizer files); models are never downloaded")
    t = Path(conf.get("tokenizer_dir") or d)
    if not any((t / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"decoder {conf['decoder']}: no tokenizer in {t} (none of {', '.join(TOKENIZER_FILES)}); "
                                "set tokenizer_dir or save the tokenizer beside the model")

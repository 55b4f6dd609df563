"""A trained captioner read back and run: the best model of an exp dir, and decoding a set with it.

Used by scoring and inference; imports no training code (the model is rebuilt from ``best.pt``'s info).
"""

from __future__ import annotations

from pathlib import Path

from etser.caption.config import check_decoder_dir, decoder_class
from etser.caption.data import CaptionSet, pad_frames
from etser.models.decoders import build_model
from etser.caption.text import Tokenizer
from etser.learn.checkpoint import read_checkpoint


def generate(model, cs: CaptionSet, device: str, num_beams: int, max_len: int, length_penalty: float = 1.0,
             batch_size: int = 32) -> list[str]:
    model.eval()
    out = []
    for s in range(0, len(cs), batch_size):
        frames, lengths = pad_frames(cs.frames[s:s + batch_size])
        out += model.generate(frames.to(device), lengths.to(device), num_beams, max_len, length_penalty)
    return out


def load_trained(exp_dir: Path, device: str = "cpu"):
    """The best model of a trained exp dir and its info."""
    path = Path(exp_dir) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (python -m etser.caption.train)")
    best = read_checkpoint(path)
    info = best["info"]
    conf = info["conf"]
    check_decoder_dir(conf)
    tok = Tokenizer.load(Path(exp_dir) / "tokenizer.json") if decoder_class(conf).own_tokenizer else None
    model = build_model(conf, len(info["layers"]), info["dim"], tok)
    model.load_state_dict(best["model"], strict=not conf["freeze_decoder"])
    return model.to(device).eval(), {**info, "epoch": best["epoch"], "val": best["val"],
                                     "averaged_epochs": best.get("averaged_epochs")}


def quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass

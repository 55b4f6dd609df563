"""The text modality: transcripts (``data/<set>/text_raw`` or ``text``) through a text encoder
(etser.features.text_encoders: ``hf_text``, a local Hugging Face directory, or ``char_ngram``, no download).

An empty or unusable transcript is a bad input (excluded, or the job stops with ``on_bad_input: fail``);
transcripts cut by ``long_text.policy: truncate`` are listed in ``<dir>/truncated`` (dropped tokens).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from etser.features.modality import BadInput, EncoderModality, UpstreamError, number, register

_FRAMES = {"layers": None, "dtype": "float16"}


class Text(EncoderModality):
    name = "text"
    files = False          # transcripts are the values themselves
    allow_empty = True     # an empty transcript is an input to exclude, not a malformed table
    time_axis = "tokens"
    model_names = ("hf_text", "char_ngram")
    defaults = {
        "modality": "text",
        "name": None,               # hf_text (a local Hugging Face directory) or char_ngram (no download)
        "ckpt": None,
        "factory": None,
        "args": {},
        "download": None,
        "text_file": "text_raw",    # data/<set>/text_raw (transcript with markup, as the official extractor) or text
        "dtype": "float32",         # weights: float32, float16 (CUDA only) or bfloat16
        "trust_remote_code": False,  # only for models whose code ships in the checkpoint (ChatGLM2, Baichuan)
        "max_length": None,         # tokens per window with special tokens; None: the model's maximum
        "long_text": {"policy": "window", "overlap": 32},  # window (overlapping windows) or truncate
        "on_bad_input": "exclude",  # exclude (listed in <dir>/excluded) or fail
        "batch": {"max_items": 16, "max_tokens": 8192},
        "frames": dict(_FRAMES),
    }

    def check(self, cfg, where):
        if cfg["text_file"] not in ("text_raw", "text"):
            raise UpstreamError(f"{where}: text_file must be one of text_raw, text, got {cfg['text_file']!r}")
        if cfg["long_text"]["policy"] not in ("window", "truncate"):
            raise UpstreamError(f"{where}: long_text.policy must be window or truncate")
        if cfg["max_length"] is not None and number(cfg, "max_length", "max_length", where, int) < 8:
            raise UpstreamError(f"{where}: max_length must be null or >= 8 tokens")
        if number(cfg["long_text"], "overlap", "long_text", where, int) < 0:
            raise UpstreamError(f"{where}: long_text.overlap must be >= 0")

    def check_ckpt(self, cfg):
        from etser.features.upstream import check_hf_dir

        if cfg.get("name") == "char_ngram":
            fit = Path(cfg["args"].get("fit_text", "data/train/text"))
            if not fit.is_file():
                raise UpstreamError(f"upstream char_ngram: the training transcripts {fit.resolve()} (args.fit_text) "
                                    "do not exist; stage 1 writes them")
        if cfg.get("name") != "hf_text" or not cfg.get("ckpt"):
            return False
        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg, ("config.json",))
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            raise UpstreamError(f"upstream {cfg['name']}: the Hugging Face directory {path.resolve()} has no "
                                f"tokenizer files; copy every file of {cfg.get('download') or 'the model repository'}")
        return True

    def input_file(self, cfg, data):
        return Path(data) / cfg["text_file"]

    def read_inputs(self, cfg, data):
        path = self.input_file(cfg, Path(data))
        if not path.is_file() and path.name == "text_raw":  # the one table with an alternative
            raise FileNotFoundError(f"{path}: not found; the {self.name} upstream reads it (stage 1 (or set "
                                    "text_file: text in the config) writes it)")
        return super().read_inputs(cfg, data)

    def fit_digest(self, cfg):
        """The n-gram baseline's fitted transform depends on its training transcripts."""
        if cfg.get("name") == "char_ngram":
            p = Path(cfg["args"].get("fit_text", "data/train/text"))
            return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"
        return ""

    def order(self, cfg, part, table, data):
        from etser.datadir import c_sort_key

        return sorted(part, key=lambda u: (-len(table[u]), c_sort_key(u)))  # longest first: memory trouble at once

    def build(self, cfg, device):
        from etser.features.text_encoders import build_text_encoder

        return build_text_encoder(cfg, device)

    def loader(self, cfg, encoder, job):
        from etser.features.text_encoders import TextError

        def load(utt):
            text = job.table[utt]
            if not text.strip():
                return BadInput("empty transcript")
            try:
                item = encoder.prepare(text)
            except TextError as e:
                return BadInput(f"unusable transcript: {e}")
            job.stats["windowed"] = job.stats.get("windowed", 0) + (len(getattr(item, "windows", [1])) > 1)
            return item, {"truncated": getattr(item, "truncated", 0)}
        return load

    def full(self, cfg, encoder, batch, item):
        max_tokens = int(cfg["batch"].get("max_tokens") or 0)
        return (len(batch) >= int(cfg["batch"]["max_items"])
                or bool(max_tokens) and sum(encoder.size(b[1]) for b in batch) + encoder.size(item) > max_tokens)

    def summary(self, stats, lists):
        return [f"{len(lists['truncated'])} truncated, {stats.get('windowed', 0)} windowed"]


register(Text())

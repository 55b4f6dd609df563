"""Text upstreams: transcripts -> per-token hidden states of every layer, (L, T, D) per utterance.

Two built-in encoders (``name:`` in a ``modality: text`` config), or ``factory:`` for your own:

- ``hf_text``: a local Hugging Face directory (BERT, RoBERTa, LERT, DeBERTa, Sentence-BERT, and causal LMs
  such as Baichuan, ChatGLM2, BLOOM, Vicuna), ``output_hidden_states`` = embeddings + every layer.  Special
  tokens (``[CLS]``, ``[SEP]``, BOS, ChatGLM's prefix) are left out: they are kept in the model's input but not
  in the time axis.  A transcript longer than ``max_length`` is cut into overlapping windows (each token is
  taken from the window where it is furthest from an edge, as for long audio) or truncated (counted).
- ``char_ngram``: no download; TF-IDF of character n-grams fitted on the TRAIN transcripts only, reduced by
  a seeded TruncatedSVD.  One frame per character (the n-grams of a small window around it), L = 1.  The fit
  is deterministic: every job refits the same transform from the same file, whose SHA-256 is recorded.

An encoder has ``prepare(text) -> item`` (run in the prefetch thread: tokenising overlaps the model),
``encode(items) -> [(L, T, D) float32 tensor]`` for a batch, ``size(item)`` (tokens, for batching) and
``info`` (recorded in the job marker).  Empty text raises ``TextError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etser.datadir import read_table
from etser.upstream import UpstreamError, check_hf_dir, load_factory


class TextError(Exception):
    """A transcript that gives no tokens; the message says why."""


DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def torch_dtype(name: str, device: str):
    import torch

    if name == "float16" and not str(device).startswith("cuda"):
        raise UpstreamError("dtype float16 needs a CUDA device (--ngpu 1); use bfloat16 or float32 on CPU")
    return getattr(torch, name)


# ---------------------------------------------------------------- windows over tokens

def token_windows(n: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(start, end, keep_from, keep_to)`` over ``n`` content tokens, all indices global.

    Consecutive windows overlap by ``overlap`` tokens; the boundary between them is the overlap's middle.
    """
    if n <= size:
        return [(0, n, 0, n)]
    hop = size - overlap
    if hop <= 0:
        raise UpstreamError(f"long_text.overlap {overlap} leaves no room in windows of {size} tokens")
    starts = list(range(0, n - size, hop)) + [n - size]
    starts = sorted(set(starts))
    ends = [s + size for s in starts]
    bounds = [(starts[i + 1] + ends[i]) // 2 for i in range(len(starts) - 1)]
    return [(s, e, ([0] + bounds)[i], (bounds + [n])[i]) for i, (s, e) in enumerate(zip(starts, ends))]


@dataclass
class Tokens:
    """A tokenised transcript: model inputs per window and the content positions kept from each."""

    windows: list[list[int]]                 # input ids with special tokens, one list per window
    keep: list[tuple[int, int]]              # per window: kept content slice in window-input coordinates
    num_tokens: int                          # content tokens
    truncated: int = 0                       # content tokens dropped by long_text.policy truncate
    extra: dict = field(default_factory=dict)


class HFTextEncoder:
    """All hidden states of a local Hugging Face text model (encoder or causal LM)."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg, ("config.json",))
        transformers.utils.logging.disable_progress_bar()
        remote = bool(cfg["trust_remote_code"])
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        dtype = torch_dtype(cfg["dtype"], device)
        try:
            self.model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=remote, **cfg["args"])
        except ValueError as e:  # remote-code LMs that register only a causal-LM class (Baichuan-7B)
            if "Unrecognized configuration class" not in str(e):
                raise
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=remote,
                                                              **cfg["args"])
        self.model.to(self.device).eval()
        mc = self.model.config
        limits = [getattr(mc, k, None) for k in ("max_position_embeddings", "n_positions", "seq_length")]
        limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 10 ** 8:
            limits.append(tok_max)
        model_max = min(limits) if limits else 512
        self.max_length = min(int(cfg["max_length"]), model_max) if cfg["max_length"] else model_max
        self.policy, self.overlap = cfg["long_text"]["policy"], int(cfg["long_text"]["overlap"])
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:  # causal LMs often have none; the value is masked out anyway
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.info = {"max_length": self.max_length, "model_class": type(self.model).__name__}

    def prepare(self, text: str) -> Tokens:
        enc = self.tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
        ids, special = list(enc["input_ids"]), list(enc["special_tokens_mask"])
        content = [i for i, s in enumerate(special) if not s]
        if not content:
            raise TextError("the transcript gives no tokens besides special tokens")
        lo, hi = content[0], content[-1] + 1
        prefix, body, suffix = ids[:lo], ids[lo:hi], ids[hi:]
        body_special = special[lo:hi]
        room = self.max_length - len(prefix) - len(suffix)
        if room < 2:
            raise UpstreamError(f"max_length {self.max_length} leaves no room for text")
        truncated = 0
        if len(body) > room and self.policy == "truncate":
            truncated = len(body) - room
            body, body_special = body[:room], body_special[:room]
        windows, keep = [], []
        for start, end, k0, k1 in token_windows(len(body), room, min(self.overlap, room // 2)):
            windows.append(prefix + body[start:end] + suffix)
            keep.append((len(prefix) + k0 - start, len(prefix) + k1 - start))
        mask = [not s for s in body_special]
        return Tokens(windows, keep, len(body), truncated, {"content_mask": mask})

    @staticmethod
    def size(item: Tokens) -> int:
        return sum(len(w) for w in item.windows)

    def encode(self, items: list[Tokens]) -> list:
        """(L, T, D) float32 per item, T = its content tokens (special tokens inside the text dropped)."""
        import torch

        seqs = [(i, w, k) for i, it in enumerate(items) for w, k in zip(it.windows, it.keep)]
        t = max(len(w) for _, w, _ in seqs)
        ids = torch.full((len(seqs), t), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), t), dtype=torch.long)
        for row, (_, w, _) in enumerate(seqs):  # right padding: causal LMs and encoders ignore it under the mask
            ids[row, :len(w)] = torch.tensor(w)
            att[row, :len(w)] = 1
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                             output_hidden_states=True)
        hs = list(out.hidden_states)
        if hs[0].shape[0] != len(seqs) and hs[0].shape[1] == len(seqs):  # ChatGLM2: (T, B, D)
            hs = [h.transpose(0, 1) for h in hs]
        stacked = torch.stack([h.float() for h in hs])  # (L, B, T, D)
        parts: list[list] = [[] for _ in items]
        for row, (i, _, (k0, k1)) in enumerate(seqs):
            parts[i].append(stacked[:, row, k0:k1])
        result = []
        for it, p in zip(items, parts):
            x = torch.cat(p, dim=1)
            mask = torch.tensor(it.extra["content_mask"])
            result.append(x[:, mask].cpu())
        return result


class CharNgramEncoder:
    """No-download baseline: TF-IDF of character n-grams (train transcripts) -> seeded TruncatedSVD, L = 1."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        a = {"fit_text": "data/train/text", "ngram_range": [1, 3], "dim": 256, "context": 2, "seed": 0, **cfg["args"]}
        unknown = set(a) - {"fit_text", "ngram_range", "dim", "context", "seed"}
        if unknown:
            raise UpstreamError(f"char_ngram: unknown args {sorted(unknown)}")
        path = Path(a["fit_text"])
        if not path.is_file():
            raise UpstreamError(f"char_ngram: the training transcripts {path.resolve()} (args.fit_text) do not exist; "
                                "stage 1 writes them")
        texts = [t for t in read_table(path).values() if t.strip()]
        if len(texts) < 2:
            raise UpstreamError(f"char_ngram: {path} has fewer than 2 non-empty transcripts to fit on")
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=tuple(a["ngram_range"]), lowercase=False,
                                          sublinear_tf=True, dtype=np.float64)
        x = self.vectorizer.fit_transform(texts)
        dim = max(1, min(int(a["dim"]), x.shape[1] - 1, x.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=dim, algorithm="arpack", random_state=int(a["seed"])).fit(x)
        # arpack's singular vectors have arbitrary signs: fix them so that refits agree
        comp = self.svd.components_
        self.svd.components_ = comp * np.sign(comp[np.arange(dim), np.abs(comp).argmax(axis=1)])[:, None]
        self.context = int(a["context"])
        self.info = {"fit_text": str(path), "fit_text_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "fit_utts": len(texts), "dim": dim}

    def prepare(self, text: str) -> list[str]:
        chars = [c for c in text if not c.isspace()]
        if not chars:
            raise TextError("the transcript is empty")
        k = self.context
        s = "".join(chars)
        return [s[max(0, i - k):i + k + 1] for i in range(len(s))]

    @staticmethod
    def size(item) -> int:
        return len(item)

    def encode(self, items: list[list[str]]) -> list:
        import torch

        flat = [w for it in items for w in it]
        z = self.svd.transform(self.vectorizer.transform(flat)).astype(np.float32)
        out, pos = [], 0
        for it in items:
            out.append(torch.from_numpy(z[pos:pos + len(it)]).unsqueeze(0))
            pos += len(it)
        return out


def build_text_encoder(cfg: dict, device: str = "cpu"):
    if cfg["factory"]:
        enc = load_factory(cfg["factory"])(**cfg["args"])
        for attr in ("prepare", "encode", "size"):
            if not callable(getattr(enc, attr, None)):
                raise UpstreamError(f"factory {cfg['factory']}: a text encoder needs prepare(), encode() and size()")
        return enc
    if cfg["name"] == "char_ngram":
        return CharNgramEncoder(cfg, device)
    return HFTextEncoder(cfg, device)

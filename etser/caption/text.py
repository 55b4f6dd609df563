"""Caption text: language detection, segmentation for the metrics, and the from-scratch decoder's tokenizer.

Chinese has no spaces, so every word-based metric (BLEU, ROUGE-L, METEOR, CIDEr-D) needs it segmented first:
``char`` (one token per character) or ``jieba`` (words).  English is lowercased and split on words.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
SEGMENTERS = ("char", "jieba", "word")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)


def is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def _is_punct(tok: str) -> bool:
    return all(unicodedata.category(c).startswith(("P", "S")) or c.isspace() for c in tok)


def segment(text: str, unit: str) -> list[str]:
    """Tokens of ``text``: ``char`` / ``jieba`` for Chinese, ``word`` for English; punctuation dropped.

    Latin words inside a Chinese caption stay whole words under ``char``.
    """
    text = unicodedata.normalize("NFKC", text).lower().strip()
    if unit == "word":
        return _WORD.findall(text)
    if unit == "char":
        out = []
        for piece in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]|[a-z0-9]+|\S", text):
            if not _is_punct(piece):
                out.append(piece)
        return out
    if unit == "jieba":
        import jieba  # imported on use: 1 s of dictionary loading
        jieba.setLogLevel(60)
        return [t for t in (w.strip() for w in jieba.lcut(text)) if t and not _is_punct(t)]
    raise ValueError(f"unknown segmentation {unit!r}; use one of {', '.join(SEGMENTERS)}")


def metric_unit(texts: Iterable[str], zh_unit: str) -> str:
    """``zh_unit`` when any caption is Chinese, else ``word``."""
    return zh_unit if any(is_chinese(t) for t in texts) else "word"


class Tokenizer:
    """Vocabulary of the training captions (characters for Chinese, words for English), 4 special tokens."""

    def __init__(self, unit: str, tokens: Sequence[str]):
        if unit not in SEGMENTERS:
            raise ValueError(f"tokenizer unit must be one of {', '.join(SEGMENTERS)}, got {unit!r}")
        self.unit = unit
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], unit: str = "auto", min_count: int = 1) -> "Tokenizer":
        captions = list(captions)
        if unit == "auto":
            unit = metric_unit(captions, "char")
        counts = Counter(t for c in captions for t in segment(c, unit))
        # most frequent first, ties in code-point order: the same captions always give the same ids
        tokens = [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        return cls(unit, tokens)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(t, UNK) for t in segment(text, self.unit)]

    def decode(self, ids: Iterable[int]) -> str:
        toks = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            toks.append(self.itos[i] if 0 <= i < len(self.itos) else "<unk>")
        if self.unit == "word":
            return " ".join(toks)
        # Chinese: no spaces, except between two Latin words
        out = ""
        for t in toks:
            if out and re.match(r"[a-z0-9]", t) and re.match(r".*[a-z0-9]$", out):
                out += " "
            out += t
        return out

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"unit": self.unit, "itos": self.itos}, ensure_ascii=False, indent=0) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the tokenizer is written by training")
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(d["unit"], d["itos"][len(SPECIALS):])

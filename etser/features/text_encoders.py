"""Text upstreams: transcripts -> per-token hidden states of every layer, (L, T, D) per utterance.

Two built-in encoders (``name:`` in a ``modality: text`` config), or ``factory:`` for your own:

- ``hf_text``: a local Hugging Face directory (BERT, RoBERTa, LERT, DeBERTa, Sentence-BERT, and causal LMs
  such as Baichuan, ChatGLM2, BLOOM, Vicuna), ``output_hidden_states`` = embeddings + every layer.  ``args``
  go to the model's ``from_pretrained``, except ``tokenizer_class``: a transformers tokenizer class to use
  where the checkpoint's files do not name theirs (WENGSYX/Deberta-Chinese-Large: ``BertTokenizer``).  Special
  tokens (``[CLS]``, ``[SEP]``, BOS, ChatGLM's prefix) are left out: they are kept in the model's input but not
  in the time axis.  Which they are is found by the tokenizer's behaviour, not its special-tokens mask (which
  ChatGLM2's tokenizer does not fill): the transcript's own tokens (``add_special_tokens=False``) are located
  among the model's input, and what surrounds them is the prefix and suffix.  A transcript longer than
  ``max_length`` is cut into overlapping windows (each token is taken from the window where it is furthest
  from an edge, as for long audio) or truncated (counted).

  Applied at load time so that the remote-code checkpoints of the paper's best text rows give correct
  features on the pinned transformers 5 (each recorded in ``info["load_fixes"]`` when it was needed):

  * a remote tokenizer that calls its parent constructor before loading its SentencePiece model (Baichuan-7B,
    ChatGLM2-6B as first published: the parent asks for the vocabulary, which fails) is built with the parent
    constructor run last, as their later revisions do (huggingface/transformers#27171);
  * a remote tokenizer's ``_pad`` without the ``padding_side`` argument that transformers now passes (ChatGLM2)
    accepts it;
  * a remote model that reads transformers 4's config defaults while being built (ChatGLM2: ``max_length``)
    gets them, and one that never calls ``post_init()`` (ChatGLM2) has it called after its constructor;
  * rotary tables built at construction as non-persistent buffers (Baichuan-7B's ``cos_cached`` /
    ``sin_cached``) are not in the checkpoint and hold uninitialised memory after ``from_pretrained``:
    they are rebuilt from the loaded ``inv_freq`` (output NaN otherwise);
  * ``config.use_cache`` is set to False before the model is built: transformers 5 no longer keeps it on the
    config, and ChatGLM2's forward reads it (AttributeError otherwise); features need no cache;
  * the hidden-state layout is decided by the model type: ChatGLM's is (T, B, D), every other (B, T, D)
    (guessing from the shapes is wrong when the batch size equals the padded length).
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
from etser.features.upstream import UpstreamError, check_hf_dir, load_factory


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


SEQ_FIRST_MODEL_TYPES = {"chatglm"}  # hidden states (T, B, D): ChatGLM2 (and ChatGLM3) remote code


def _remote_tokenizer_class(path: Path):
    """The slow tokenizer class a remote-code checkpoint names in tokenizer_config.json, or None."""
    import json

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    conf = path / "tokenizer_config.json"
    if not conf.is_file():
        return None
    ref = json.loads(conf.read_text(encoding="utf-8")).get("auto_map", {}).get("AutoTokenizer")
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    return get_class_from_dynamic_module(ref, str(path)) if ref else None


def _parent_constructor_last(cls):
    """``cls`` with its parent's constructor run after its own body rather than where it calls it.

    Remote tokenizers written for transformers < 4.34 call the parent constructor first and load their
    SentencePiece model after it; the parent now asks for the vocabulary at once, which needs that model
    (Baichuan-7B's ``sp_model``, ChatGLM2's ``tokenizer``).  Running the parent last is what their later hub
    revisions do by hand.  A class in between (``Deferred``) records the call: the MRO is ``cls``,
    ``Deferred``, then ``cls``'s parent, so ``super().__init__`` inside ``cls`` reaches the recorder."""
    parent = cls.__mro__[1]

    class Deferred(parent):
        def __init__(self, *args, **kwargs):
            self._deferred_parent_init = (args, kwargs)

    class ParentConstructorLast(cls, Deferred):
        def __init__(self, *args, **kwargs):
            cls.__init__(self, *args, **kwargs)
            a, kw = self.__dict__.pop("_deferred_parent_init")
            parent.__init__(self, *a, **kw)

    ParentConstructorLast.__name__ = ParentConstructorLast.__qualname__ = cls.__name__
    return ParentConstructorLast


def _pad_without_padding_side(cls):
    """``cls`` whose ``_pad`` takes the ``padding_side`` argument that transformers now passes on every call;
    written before it existed (ChatGLM2's), the old ``_pad`` reads ``self.padding_side`` instead."""

    class PadSide(cls):
        def _pad(self, *args, padding_side=None, **kwargs):
            if padding_side not in (None, self.padding_side):
                raise UpstreamError(f"{cls.__name__}._pad pads on the {self.padding_side}, not the "
                                    f"{padding_side}, and cannot be told otherwise")
            return cls._pad(self, *args, **kwargs)

    PadSide.__name__ = PadSide.__qualname__ = cls.__name__
    return PadSide


def _missing_attribute(e: AttributeError) -> str | None:
    import re

    if getattr(e, "name", None):
        return e.name
    m = re.search(r"has no attribute '(\w+)'", str(e))
    return m.group(1) if m else None


def load_tokenizer(path: Path, remote: bool) -> tuple:
    """(tokenizer, fixes applied): a remote tokenizer's class is adapted where it predates the pinned
    transformers (see the module's docstring)."""
    import inspect

    from transformers import AutoTokenizer

    cls = _remote_tokenizer_class(path) if remote else None
    old_pad = cls is not None and "_pad" in vars(cls) and \
        "padding_side" not in inspect.signature(cls._pad).parameters

    def build(c):
        if c is None:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        return (_pad_without_padding_side(c) if old_pad else c).from_pretrained(path)

    fixes = []
    try:
        tok = build(cls if old_pad else None)
    except (TypeError, AttributeError) as e:
        if cls is None:
            raise
        try:
            tok = build(_parent_constructor_last(cls))
        except Exception:
            raise e from None
        fixes.append(f"{cls.__name__}: the parent constructor run after the tokenizer's own (as written: "
                     f"{type(e).__name__}: {e})")
    if old_pad:
        fixes.append(f"{cls.__name__}._pad: padding_side accepted (the tokenizer's own padding side is used)")
    return tok, fixes


# transformers 4 set these on every config (generation defaults); remote models of that time read them
# while being built (ChatGLM2: ``config.max_length``).  The values are transformers 4's; features never generate.
LEGACY_CONFIG_DEFAULTS = {"max_length": 20, "min_length": 0}


def _post_init_after(cls):
    """``cls`` whose constructor ends with ``post_init()``, which loading now relies on (it sets up
    ``all_tied_weights_keys``); remote models of transformers 4's time often never called it (ChatGLM2)."""

    class PostInit(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not hasattr(self, "all_tied_weights_keys"):
                self.post_init()

    PostInit.__name__ = PostInit.__qualname__ = cls.__name__
    return PostInit


def load_model(path: Path, dtype, remote: bool, args: dict) -> tuple:
    """(model, fixes applied).  ``AutoModel``, or the causal-LM class where a remote checkpoint registers only
    that (Baichuan-7B); a remote model written for transformers 4 gets its config's old defaults and its
    ``post_init()`` (each recorded)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # as from_pretrained does itself: args naming config attributes override them, the rest go to the model
    config, model_args = AutoConfig.from_pretrained(path, trust_remote_code=remote, return_unused_kwargs=True,
                                                    **args)
    config.use_cache = False  # transformers 5 drops it from the config; ChatGLM2's forward reads it
    auto, model_cls, fixes = AutoModel, None, []
    for _ in range(len(LEGACY_CONFIG_DEFAULTS) + 3):
        try:
            return (model_cls or auto).from_pretrained(path, config=config, dtype=dtype, trust_remote_code=remote,
                                                       **model_args), fixes
        except ValueError as e:
            if "Unrecognized configuration class" not in str(e) or auto is AutoModelForCausalLM:
                raise
            auto = AutoModelForCausalLM
        except AttributeError as e:
            name = _missing_attribute(e)
            if not remote:
                raise
            if name in LEGACY_CONFIG_DEFAULTS and isinstance(getattr(e, "obj", config), PretrainedConfig) \
                    and not hasattr(config, name):
                setattr(config, name, LEGACY_CONFIG_DEFAULTS[name])
                fixes.append(f"config.{name} = {LEGACY_CONFIG_DEFAULTS[name]} (transformers 4's default; the "
                             f"model reads it while being built)")
            elif name == "all_tied_weights_keys" and model_cls is None:
                ref = (getattr(config, "auto_map", None) or {}).get(auto.__name__)
                if not ref:
                    raise
                model_cls = _post_init_after(get_class_from_dynamic_module(ref, str(path)))
                fixes.append(f"{model_cls.__name__}: post_init() called after its constructor (it does not call it)")
            else:
                raise
    raise UpstreamError(f"hf_text: {path}: the model still fails to load after {fixes}")


def rebuild_rotary_tables(model) -> int:
    """Recompute every ``cos_cached`` / ``sin_cached`` pair from its module's ``inv_freq`` (the layout of
    Baichuan-7B and LLaMA-1 era code: ``cat(freqs, freqs)`` over positions, leading unit axes); returns how
    many modules were rebuilt.  A table of another shape or a non-finite ``inv_freq`` is an error."""
    import torch

    n = 0
    for name, mod in model.named_modules():
        inv, cos, sin = (getattr(mod, k, None) for k in ("inv_freq", "cos_cached", "sin_cached"))
        if not all(isinstance(t, torch.Tensor) for t in (inv, cos, sin)):
            continue
        if not torch.isfinite(inv).all():
            raise UpstreamError(f"{name}.inv_freq is not finite after loading: the checkpoint's rotary "
                                "frequencies are unusable")
        steps = cos.shape[-2]
        t = torch.arange(steps, device=inv.device, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, inv.float())] * 2, dim=-1)
        if tuple(emb.shape) != tuple(cos.shape[-2:]) or cos.shape != sin.shape or cos.numel() != emb.numel():
            raise UpstreamError(f"{name}: rotary tables of shape {tuple(cos.shape)} do not follow "
                                f"cat(freqs, freqs) of inv_freq {tuple(inv.shape)}; cannot rebuild them")
        with torch.no_grad():
            cos.copy_(emb.cos().reshape(cos.shape).to(cos.dtype))
            sin.copy_(emb.sin().reshape(sin.shape).to(sin.dtype))
        n += 1
    return n


class HFTextEncoder:
    """All hidden states of a local Hugging Face text model (encoder or causal LM)."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import torch
        import transformers

        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg, ("config.json",))
        transformers.utils.logging.disable_progress_bar()
        remote = bool(cfg["trust_remote_code"])
        self.device = torch.device(device)
        args = dict(cfg["args"])
        tok_class = args.pop("tokenizer_class", None)
        if tok_class:  # a checkpoint whose files do not name its tokenizer (WENGSYX/Deberta-Chinese-Large: BERT vocab)
            cls = getattr(transformers, str(tok_class), None)
            if cls is None or not hasattr(cls, "from_pretrained"):
                raise UpstreamError(f"hf_text: args.tokenizer_class {tok_class!r} is not a transformers "
                                    "tokenizer class")
            self.tokenizer, fixes = cls.from_pretrained(path), []
        else:
            self.tokenizer, fixes = load_tokenizer(path, remote)
        self.model, model_fixes = load_model(path, torch_dtype(cfg["dtype"], device), remote, args)
        self.model.to(self.device).eval()
        mc = self.model.config
        fixes += model_fixes
        rebuilt = rebuild_rotary_tables(self.model)
        if rebuilt:
            fixes.append(f"rotary tables of {rebuilt} modules rebuilt from inv_freq after loading")
        self.seq_first = getattr(mc, "model_type", None) in SEQ_FIRST_MODEL_TYPES
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
        if fixes:
            self.info["load_fixes"] = fixes

    def prepare(self, text: str) -> Tokens:
        enc = self.tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        own = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not own:
            raise TextError("the transcript gives no tokens")
        lo = next((i for i in range(len(ids) - len(own) + 1) if ids[i:i + len(own)] == own), None)
        if lo is None:
            raise TextError(f"{type(self.tokenizer).__name__}: the transcript's own tokens {own[:8]} are not a "
                            f"run of the model's input {ids[:8]}: cannot tell special tokens from text")
        hi = lo + len(own)
        prefix, body, suffix = ids[:lo], ids[lo:hi], ids[hi:]
        special = list(enc.get("special_tokens_mask") or [])
        # special tokens written inside the text, where the tokenizer marks them; ChatGLM2's mask is short
        body_special = special[lo:hi] if len(special) == len(ids) else [0] * len(body)
        if all(body_special):
            raise TextError("the transcript gives no tokens besides special tokens")
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
        if self.seq_first:
            hs = [h.transpose(0, 1) for h in hs]
        if tuple(hs[0].shape[:2]) != (len(seqs), t):
            raise UpstreamError(f"{type(self.model).__name__} (model_type {self.model.config.model_type}): hidden "
                                f"states of shape {tuple(hs[0].shape)}, expected ({len(seqs)}, {t}, D)"
                                + (" after (T, B, D) -> (B, T, D)" if self.seq_first else ""))
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

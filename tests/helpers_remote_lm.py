"""Test doubles of the two remote-code text checkpoints whose real files break on the pinned stack.

Written for these tests (no third-party file is copied): tiny models whose remote code reproduces what
matters of the real Baichuan-7B and ChatGLM2-6B files, saved as checkpoint folders in a tmp dir and loaded
with ``trust_remote_code`` from local files (nothing is downloaded):

- Baichuan-7B: a SentencePiece tokenizer that calls the parent constructor before it loads its model (the
  order of the real ``tokenization_baichuan.py``); rotary tables (``cos_cached``/``sin_cached``,
  non-persistent buffers) built at construction from ``inv_freq``; the model registered for
  ``AutoModelForCausalLM`` only; BOS prepended.
- ChatGLM2-6B (as first published): a config class that does not set ``use_cache`` (read by the forward
  when not passed) nor ``max_length`` (read by the model's constructor: transformers 4 set it on every
  config); a model that never calls ``post_init()``; a tokenizer that calls the parent constructor before
  building its SentencePiece wrapper and whose ``_pad`` predates the ``padding_side`` argument; the
  ``[gMASK]``, ``sop`` prefix from ``get_prefix_tokens()`` with ids past the SentencePiece vocabulary and no
  special-tokens mask of its own; hidden states laid out (T, B, D); ``AutoModel`` mapped to the
  conditional-generation class.

``direct_features`` runs the same model built directly (the class constructed, the saved weights loaded by
``load_state_dict``) on ids made by the SentencePiece model itself: the reference the recipe must match.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

CHARS = "今天下午我们开会吃饭很开心高兴快乐太好了难过伤心哭失望生气愤怒讨厌烦真的是吗呢啊一个人去看电影"

# ---------------------------------------------------------------- Baichuan-7B double

BAICHUAN_CONFIG = '''
from transformers.configuration_utils import PretrainedConfig


class BaiChuanConfig(PretrainedConfig):
    model_type = "baichuan"

    def __init__(self, vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, use_cache=True,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

BAICHUAN_MODEL = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_baichuan import BaiChuanConfig


class RMSNorm(nn.Module):
    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, h):
        v = h.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(v + self.eps)).to(self.weight.dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=64, base=10000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)
        # tables built once, here, as non-persistent buffers: not in the checkpoint
        self.max_seq_len_cached = max_position_embeddings
        t = torch.arange(self.max_seq_len_cached, dtype=self.inv_freq.dtype)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None, :, :], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None, :, :], persistent=False)

    def forward(self, x, seq_len):
        return (self.cos_cached[:, :, :seq_len].to(x.dtype), self.sin_cached[:, :, :seq_len].to(x.dtype))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_size, self.num_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.W_pack = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=False)
        self.o_proj = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim, config.max_position_embeddings)

    def forward(self, h, mask):
        b, t, _ = h.shape
        q, k, v = self.W_pack(h).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self.rotary_emb(v, seq_len=t)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        out = torch.matmul(torch.softmax(w.float(), dim=-1).to(q.dtype), v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.hidden_size))


class DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.intermediate_size), nn.SiLU(),
                                 nn.Linear(config.intermediate_size, config.hidden_size))
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, h, mask):
        h = h + self.self_attn(self.input_layernorm(h), mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class PreTrainedModel(PreTrainedModel):
    config_class = BaiChuanConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.5)


class Model(PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, use_cache=None, output_hidden_states=None, **kw):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        b, t = input_ids.shape
        h = self.embed_tokens(input_ids)
        causal = torch.full((t, t), torch.finfo(h.dtype).min, device=h.device).triu(1)
        if attention_mask is None:
            attention_mask = torch.ones((b, t), device=h.device)
        pad = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        mask = causal[None, None] + pad
        hs = ()
        for layer in self.layers:
            hs += (h,)
            h = layer(h, mask)
        h = self.norm(h)
        hs += (h,)
        return BaseModelOutputWithPast(last_hidden_state=h, hidden_states=hs if output_hidden_states else None)


class BaiChuanForCausalLM(PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, use_cache=None, output_hidden_states=None, **kw):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         output_hidden_states=output_hidden_states)
        return CausalLMOutputWithPast(logits=self.lm_head(out.last_hidden_state), hidden_states=out.hidden_states)
'''

BAICHUAN_TOKENIZER = '''
import os
from shutil import copyfile

import sentencepiece as spm
from transformers.tokenization_utils import AddedToken, PreTrainedTokenizer


class BaichuanTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 sp_model_kwargs=None, add_bos_token=True, add_eos_token=False,
                 clean_up_tokenization_spaces=False, **kwargs):
        self.sp_model_kwargs = {} if sp_model_kwargs is None else sp_model_kwargs
        bos_token = AddedToken(bos_token, lstrip=False, rstrip=False) if isinstance(bos_token, str) else bos_token
        eos_token = AddedToken(eos_token, lstrip=False, rstrip=False) if isinstance(eos_token, str) else eos_token
        unk_token = AddedToken(unk_token, lstrip=False, rstrip=False) if isinstance(unk_token, str) else unk_token
        # the parent constructor first, the SentencePiece model after it (as the original file does)
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token,
                         sp_model_kwargs=self.sp_model_kwargs,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)
        self.vocab_file = vocab_file
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(vocab_file)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.convert_ids_to_tokens(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.IdToPiece(index)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode(tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            copyfile(self.vocab_file, out)
        return (out,)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            out = out + bos + token_ids_1 + eos
        return out

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0=token_ids_0, token_ids_1=token_ids_1,
                                                   already_has_special_tokens=True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        if token_ids_1 is None:
            return bos + [0] * len(token_ids_0) + eos
        return bos + [0] * len(token_ids_0) + eos + bos + [0] * len(token_ids_1) + eos
'''

# ---------------------------------------------------------------- ChatGLM2-6B double

CHATGLM_CONFIG = '''
from transformers import PretrainedConfig


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"

    def __init__(self, num_layers=2, padded_vocab_size=64, hidden_size=16, ffn_hidden_size=32,
                 num_attention_heads=2, seq_length=64, layernorm_epsilon=1e-5, **kwargs):
        # no use_cache here: the forward reads self.config.use_cache
        self.num_layers = num_layers
        self.vocab_size = padded_vocab_size
        self.padded_vocab_size = padded_vocab_size
        self.hidden_size = hidden_size
        self.ffn_hidden_size = ffn_hidden_size
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.layernorm_epsilon = layernorm_epsilon
        super().__init__(**kwargs)
'''

CHATGLM_MODEL = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_chatglm import ChatGLMConfig


class GLMBlock(nn.Module):
    """Works on (T, B, D), as the original."""

    def __init__(self, config):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, config.ffn_hidden_size), nn.GELU(),
                                 nn.Linear(config.ffn_hidden_size, config.hidden_size))
        self.heads = config.num_attention_heads

    def forward(self, h, mask, kv_cache=None, use_cache=True):
        t, b, d = h.shape
        hd = d // self.heads
        q, k, v = self.query_key_value(self.input_layernorm(h)).view(t, b, 3, self.heads, hd).permute(2, 1, 3, 0, 4)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
        w = w.masked_fill(mask, float("-inf"))
        ctx = torch.matmul(torch.softmax(w, dim=-1), v).permute(2, 0, 1, 3).reshape(t, b, d)
        h = h + self.dense(ctx)
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, ((k, v) if use_cache else None)


class ChatGLMPreTrainedModel(PreTrainedModel):
    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["GLMBlock"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.5)

    def get_masks(self, input_ids, padding_mask=None):
        b, t = input_ids.shape
        full = torch.ones(b, t, t, device=input_ids.device).tril_()
        if padding_mask is not None:
            full = full * padding_mask.unsqueeze(1)
            full -= padding_mask.unsqueeze(-1) - 1
        return (full < 0.5).bool().unsqueeze(1)


class ChatGLMModel(ChatGLMPreTrainedModel):
    def __init__(self, config, device=None, empty_init=True):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([GLMBlock(config) for _ in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, input_ids, attention_mask=None, use_cache=None, output_hidden_states=None, **kw):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = self.get_masks(input_ids, attention_mask)
        h = self.word_embeddings(input_ids).transpose(0, 1).contiguous()  # [b s h] -> [s b h]
        hs, presents = (), ()
        for layer in self.layers:
            hs += (h,)
            h, kv = layer(h, mask, use_cache=use_cache)
            if use_cache:
                presents += (kv,)
        hs += (h,)
        h = self.final_layernorm(h)
        return BaseModelOutputWithPast(last_hidden_state=h, past_key_values=presents if use_cache else None,
                                       hidden_states=hs if output_hidden_states else None)


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel):
    def __init__(self, config, empty_init=True, device=None):
        # as first published: reads transformers 4's config.max_length, never calls post_init()
        super().__init__(config)
        self.max_sequence_length = config.max_length
        self.transformer = ChatGLMModel(config, empty_init=empty_init, device=device)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)

    def forward(self, input_ids=None, attention_mask=None, use_cache=None, output_hidden_states=None, **kw):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                               output_hidden_states=output_hidden_states)
        logits = self.output_layer(out.last_hidden_state).transpose(0, 1).contiguous()
        return CausalLMOutputWithPast(logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states)
'''

CHATGLM_TOKENIZER = '''
import os

from sentencepiece import SentencePieceProcessor
from transformers import PreTrainedTokenizer
from transformers.utils import PaddingStrategy


class SPTokenizer:
    def __init__(self, model_path):
        self.sp_model = SentencePieceProcessor(model_file=model_path)
        self.n_words = self.sp_model.vocab_size()
        self.bos_id, self.eos_id, self.pad_id = self.sp_model.bos_id(), self.sp_model.eos_id(), self.sp_model.unk_id()
        self.special_tokens, self.index_special_tokens = {}, {}
        for token in ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]:  # ids past the SentencePiece vocabulary
            self.special_tokens[token] = self.n_words
            self.index_special_tokens[self.n_words] = token
            self.n_words += 1

    def tokenize(self, s):
        return self.sp_model.EncodeAsPieces(s)

    def convert_token_to_id(self, token):
        if token in self.special_tokens:
            return self.special_tokens[token]
        return self.sp_model.PieceToId(token)

    def convert_id_to_token(self, index):
        if index in self.index_special_tokens or index in [self.eos_id, self.bos_id, self.pad_id] or index < 0:
            return ""
        return self.sp_model.IdToPiece(index)


class ChatGLMTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask", "position_ids"]

    def __init__(self, vocab_file, padding_side="left", clean_up_tokenization_spaces=False, **kwargs):
        # the parent constructor first, the SentencePiece wrapper after it (as first published)
        super().__init__(padding_side=padding_side, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                         **kwargs)
        self.name = "GLMTokenizer"
        self.vocab_file = vocab_file
        self.tokenizer = SPTokenizer(vocab_file)
        self.special_tokens = {"<bos>": self.tokenizer.bos_id, "<eos>": self.tokenizer.eos_id,
                               "<pad>": self.tokenizer.pad_id}

    def get_command(self, token):
        if token in self.special_tokens:
            return self.special_tokens[token]
        return self.tokenizer.special_tokens[token]

    @property
    def unk_token(self):
        return "<unk>"

    @property
    def pad_token(self):
        return "<unk>"

    @property
    def pad_token_id(self):
        return self.get_command("<pad>")

    @property
    def eos_token(self):
        return "</s>"

    @property
    def eos_token_id(self):
        return self.get_command("<eos>")

    @property
    def vocab_size(self):
        return self.tokenizer.n_words

    def get_vocab(self):
        vocab = {self._convert_id_to_token(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text, **kwargs):
        return self.tokenizer.tokenize(text)

    def _convert_token_to_id(self, token):
        return self.tokenizer.convert_token_to_id(token)

    def _convert_id_to_token(self, index):
        return self.tokenizer.convert_id_to_token(index)

    def convert_tokens_to_string(self, tokens):
        return self.tokenizer.sp_model.DecodePieces(tokens)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = os.path.join(save_directory, "tokenizer.model")
        with open(self.vocab_file, "rb") as fin, open(out, "wb") as fout:
            fout.write(fin.read())
        return (out,)

    def get_prefix_tokens(self):
        return [self.get_command("[gMASK]"), self.get_command("sop")]

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        token_ids_0 = self.get_prefix_tokens() + token_ids_0
        if token_ids_1 is not None:
            token_ids_0 = token_ids_0 + token_ids_1 + [self.get_command("<eos>")]
        return token_ids_0

    def _pad(self, encoded_inputs, max_length=None, padding_strategy=PaddingStrategy.DO_NOT_PAD,
             pad_to_multiple_of=None, return_attention_mask=None):
        # written before transformers passed padding_side: left padding only, position_ids made here
        assert self.padding_side == "left"
        required_input = encoded_inputs[self.model_input_names[0]]
        seq_length = len(required_input)
        if padding_strategy == PaddingStrategy.LONGEST:
            max_length = len(required_input)
        if max_length is not None and pad_to_multiple_of is not None and (max_length % pad_to_multiple_of != 0):
            max_length = ((max_length // pad_to_multiple_of) + 1) * pad_to_multiple_of
        needs_to_be_padded = padding_strategy != PaddingStrategy.DO_NOT_PAD and len(required_input) != max_length
        if "attention_mask" not in encoded_inputs:
            encoded_inputs["attention_mask"] = [1] * seq_length
        if "position_ids" not in encoded_inputs:
            encoded_inputs["position_ids"] = list(range(seq_length))
        if needs_to_be_padded:
            difference = max_length - len(required_input)
            encoded_inputs["attention_mask"] = [0] * difference + encoded_inputs["attention_mask"]
            encoded_inputs["position_ids"] = [0] * difference + encoded_inputs["position_ids"]
            encoded_inputs[self.model_input_names[0]] = [self.pad_token_id] * difference + required_input
        return encoded_inputs
'''


def sp_model(path: Path, model_type: str = "unigram") -> Path:
    """A tiny SentencePiece model of the test characters (unk 0, bos 1, eos 2, as both checkpoints')."""
    import sentencepiece as spm

    lines = [CHARS[i:i + 7] for i in range(0, len(CHARS), 3)] + list(CHARS)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=80,
                                   model_type=model_type, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    path.write_bytes(buf.getvalue())
    return path


def _remote_class(folder: Path, ref: str):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(ref, str(folder))


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def _finish(folder: Path, model, config_extra: dict, auto_map: dict, tok_config: dict) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(folder)
    conf = json.loads((folder / "config.json").read_text())
    conf.update(config_extra)
    conf["auto_map"] = auto_map
    conf.pop("use_cache", None)
    conf["use_cache"] = True  # the real config.json has it; the pinned stack no longer keeps it on the config
    (folder / "config.json").write_text(json.dumps(conf, indent=1))
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
    return folder


def tiny_baichuan(folder: Path, seed: int = 0) -> Path:
    _write(folder, {"configuration_baichuan.py": BAICHUAN_CONFIG, "modeling_baichuan.py": BAICHUAN_MODEL,
                    "tokenization_baichuan.py": BAICHUAN_TOKENIZER})
    sp_model(folder / "tokenizer.model")
    cfg_cls = _remote_class(folder, "configuration_baichuan.BaiChuanConfig")
    model_cls = _remote_class(folder, "modeling_baichuan.BaiChuanForCausalLM")
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(vocab_size=96))
    auto = {"AutoConfig": "configuration_baichuan.BaiChuanConfig",
            "AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM"}
    tok = {"tokenizer_class": "BaichuanTokenizer", "add_bos_token": True, "add_eos_token": False,
           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
           "model_max_length": 64, "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]}}
    return _finish(folder, model, {"architectures": ["BaiChuanForCausalLM"], "model_type": "baichuan"}, auto, tok)


def tiny_chatglm2(folder: Path, seed: int = 0) -> Path:
    _write(folder, {"configuration_chatglm.py": CHATGLM_CONFIG, "modeling_chatglm.py": CHATGLM_MODEL,
                    "tokenization_chatglm.py": CHATGLM_TOKENIZER})
    sp_model(folder / "tokenizer.model")
    cfg_cls = _remote_class(folder, "configuration_chatglm.ChatGLMConfig")
    model_cls = _remote_class(folder, "modeling_chatglm.ChatGLMForConditionalGeneration")
    torch.manual_seed(seed)
    cfg = cfg_cls(padded_vocab_size=104)
    cfg.max_length = 20  # built here as under transformers 4, which set it; config.json will not hold it
    model = model_cls(cfg, empty_init=False)
    model.post_init()
    del cfg.max_length  # not saved (transformers 5 refuses generation parameters on a config)
    auto = {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"}
    tok = {"tokenizer_class": "ChatGLMTokenizer", "remove_space": False, "do_lower_case": False,
           "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}}
    return _finish(folder, model, {"architectures": ["ChatGLMModel"], "model_type": "chatglm"}, auto, tok)


def direct_features(folder: Path, kind: str, text: str) -> np.ndarray:
    """(L, D) mean over the transcript's tokens of each layer, from the model built directly (not by
    ``from_pretrained``) on ids made by the SentencePiece model itself."""
    import sentencepiece as spm
    from safetensors.torch import load_file

    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    body = sp.encode(text)
    conf = json.loads((folder / "config.json").read_text())
    cfg_cls = _remote_class(folder, conf["auto_map"]["AutoConfig"])
    model_ref = conf["auto_map"]["AutoModelForCausalLM"]
    cfg = cfg_cls(**{k: v for k, v in conf.items() if k not in ("auto_map", "architectures", "model_type")})
    cfg.use_cache = False
    cfg.max_length = 20  # transformers 4's default, which ChatGLM2's constructor reads
    model = _remote_class(folder, model_ref)(cfg)
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("cached" in k for k in missing), (missing, unexpected)
    model.eval()
    if kind == "baichuan":
        prefix = [sp.bos_id()]
    else:
        n = sp.get_piece_size()
        prefix = [n + 1, n + 3]  # [gMASK], sop
    ids = torch.tensor([prefix + body])
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    x = torch.stack([h[:, 0] if kind == "chatglm2" else h[0] for h in hs])  # (L, T, D)
    return x[:, len(prefix):].mean(dim=1).double().numpy()

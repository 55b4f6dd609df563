"""Caption models: frames (B, T, L', D) -> layer weighting -> adaptor -> a decoder.

Decoders (``decoder:`` in conf/caption/<dec>.yaml):

- ``transformer``: torch.nn.TransformerDecoder trained from scratch on the ``Tokenizer`` of the training
  captions; our own greedy and beam search.
- ``gpt2``: a GPT-2 family model from ``decoder_dir``, ``mode: cross`` (``add_cross_attention=True``; the
  adaptor output is ``encoder_hidden_states``) or ``mode: prefix`` (a fixed number of projected audio vectors
  before the caption's token embeddings).
- ``qwen2``: a Qwen-2 family model fed the prefix (``inputs_embeds``).
- ``bart``: BartForConditionalGeneration; ``bart_input: encoder`` (adaptor output as the encoder's
  ``inputs_embeds``) or ``encoder_outputs`` (the adaptor output replaces the encoder).

Every model has ``loss(frames, lengths, captions)`` and ``generate(frames, lengths, num_beams, max_len)``.
Pretrained decoders can be frozen (``freeze_decoder: true``): only the adaptor (and GPT-2's new
cross-attention blocks) train, and checkpoints hold only those weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from etser import models
from etser.models import register
from etser.caption.text import BOS, EOS, PAD, Tokenizer

LOG = logging.getLogger("etser.caption")


class Adaptor(nn.Module):
    """Softmax-weighted sum of the layers (or the one layer) -> downsample by ``downsample`` -> projection."""

    def __init__(self, num_layers: int, dim: int, out_dim: int, hidden_dim: int = 256, downsample: int = 2,
                 kind: str = "conv", dropout: float = 0.1, normalize: bool | str = True):
        super().__init__()
        if kind not in ("conv", "linear"):
            raise ValueError(f"adaptor kind must be conv or linear, got {kind!r}")
        if normalize not in (True, False, "global"):
            raise ValueError(f"adaptor normalize must be true (per frame), false or global, got {normalize!r}")
        self.k, self.kind, self.normalize = int(downsample), kind, normalize
        # global: each layer's dimensions standardised with the training set's mean and std (set_stats); unlike
        # a per-frame layer norm it keeps the frame energy (loudness)
        self.register_buffer("feat_mean", torch.zeros(num_layers, dim))
        self.register_buffer("feat_std", torch.ones(num_layers, dim))
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        if kind == "conv":
            ksz = 2 * self.k - 1 if self.k > 1 else 3
            self.down = nn.Conv1d(dim, hidden_dim, ksz, stride=self.k, padding=(ksz - 1) // 2)
        else:  # stack k consecutive frames
            self.down = nn.Linear(dim * self.k, hidden_dim)
        self.proj = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))

    def weighted(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D): the normalised frames, layers weighted and summed, zero past each utterance's length."""
        x = frames.float()
        if self.normalize == "global":
            x = (x - self.feat_mean) / self.feat_std
        elif self.normalize:
            x = F.layer_norm(x, x.shape[-1:])
        x = (torch.softmax(self.layer_logits, 0)[None, None, :, None] * x).sum(2)  # (B, T, D)
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        return x * valid[..., None]

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', out_dim) and the valid mask (B, T'), T' = ceil(T / downsample)."""
        return self.project(self.weighted(frames, lengths), lengths)

    def project(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` after ``weighted``."""
        t = x.shape[1]
        if self.kind == "conv":
            h = self.down(x.transpose(1, 2)).transpose(1, 2)
        else:
            pad = (-t) % self.k
            x = F.pad(x, (0, 0, 0, pad))
            h = self.down(x.reshape(x.shape[0], -1, self.k * x.shape[-1]))
        out_len = (lengths.to(x.device) + self.k - 1) // self.k
        mask = torch.arange(h.shape[1], device=x.device)[None] < out_len[:, None]
        return self.proj(h), mask


def frame_stats(frames) -> tuple[torch.Tensor, torch.Tensor]:
    """(L', D) mean and std over every frame of a set of (T, L', D) tensors (float64 sums)."""
    n, s1, s2 = 0, 0.0, 0.0
    for f in frames:
        f = f.double()
        n, s1, s2 = n + f.shape[0], s1 + f.sum(0), s2 + (f * f).sum(0)
    mean = s1 / n
    std = (s2 / n - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float().clamp(min=1e-5)


def fixed_prefix(mem: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, H): each utterance's valid vectors averaged in n equal segments (a fixed-length prefix)."""
    out = []
    for b in range(mem.shape[0]):
        m = mem[b, mask[b]]
        if m.shape[0] < n:  # short utterance: repeat vectors so every segment has one
            m = m.repeat_interleave(math.ceil(n / m.shape[0]), dim=0)
        out.append(F.adaptive_avg_pool1d(m.t()[None], n)[0].t())
    return torch.stack(out)


STATS = ("mean", "std", "delta")
DEFAULT_STATS = ("mean", "std")   # stats_token: true


def utterance_stats(x: torch.Tensor, lengths: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """Per utterance of (B, T, D) frames that are zero past each length: the (B, D) statistics ``names`` (mean,
    std over time; delta: mean absolute difference of consecutive frames)."""
    n = lengths.to(x.device).clamp(min=1)[:, None].float()
    mean = x.sum(1) / n
    out = {"mean": mean}
    if "std" in names:
        out["std"] = ((x * x).sum(1) / n - mean * mean).clamp(min=0).sqrt()
    if "delta" in names:
        pairs = torch.arange(x.shape[1] - 1, device=x.device)[None] < (lengths.to(x.device)[:, None] - 1)
        diff = (x[:, 1:] - x[:, :-1]).abs() * pairs[..., None]
        out["delta"] = diff.sum(1) / (n - 1).clamp(min=1)
    return [out[k] for k in names]


def _sinusoid(length: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


@register("decoder", "transformer")
class ScratchCaptioner(nn.Module):
    """Adaptor + torch.nn.TransformerDecoder over the training captions' vocabulary."""

    own_tokenizer = True    # built from the training captions (tokenizer.json of the exp dir); no decoder_dir

    def truncation_note(self) -> str | None:
        return None   # it keeps no count of cut inputs

    def __init__(self, conf: dict, num_layers: int, dim: int, tokenizer: Tokenizer):
        super().__init__()
        dc = conf["decoder_conf"]
        d = int(dc.get("d_model", 256))
        self.tok, self.d = tokenizer, d
        self.max_tokens = int(conf["max_caption_tokens"])
        self.adaptor = Adaptor(num_layers, dim, d, **conf["adaptor_conf"])
        self.embed = nn.Embedding(len(tokenizer), d, padding_idx=PAD)
        layer = nn.TransformerDecoderLayer(d, int(dc.get("nhead", 4)), int(dc.get("ffn_dim", 4 * d)),
                                           float(dc.get("dropout", 0.1)), batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, int(dc.get("num_layers", 2)))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, len(tokenizer))
        # encoder_layers: self-attention over the adaptor output, so that each memory vector sees the whole
        # utterance (speaking rate, the loudness of the utterance, not of one frame)
        n_enc = int(dc.get("encoder_layers", 0))
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
            d, int(dc.get("nhead", 4)), int(dc.get("ffn_dim", 4 * d)), float(dc.get("dropout", 0.1)),
            batch_first=True, norm_first=True), n_enc, enable_nested_tensor=False) if n_enc else None
        # stats_token: one more memory vector of utterance statistics of the normalised frames: true or [mean,
        # std] (what the nearest-utterance baseline compares), and delta, the mean absolute change from one frame
        # to the next (how fast pitch and loudness move: the speaking rate, which time means barely show)
        st = dc.get("stats_token")
        if not (st is None or isinstance(st, bool) or isinstance(st, (list, tuple)) and set(st) <= set(STATS)):
            raise ValueError(f"decoder_conf.stats_token must be true, false or a list of {', '.join(STATS)}; "
                             f"got {st!r}")
        self.stat_names = DEFAULT_STATS if st is True else tuple(st or ())
        self.stats = nn.Linear(len(self.stat_names) * dim, d) if self.stat_names else None
        self.label_smoothing = float(dc.get("label_smoothing", 0.0))

    def encode_targets(self, captions: Sequence[str]) -> list[list[int]]:
        return [self.tok.encode(c)[: self.max_tokens] for c in captions]

    def token_lengths(self, captions: Sequence[str]) -> list[int]:
        return [len(self.tok.encode(c)) for c in captions]

    def _decode(self, ys: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ys) * math.sqrt(self.d) + _sinusoid(ys.shape[1], self.d, ys.device)
        causal = nn.Transformer.generate_square_subsequent_mask(ys.shape[1], device=ys.device)
        h = self.decoder(x, mem, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=ys == PAD,
                         memory_key_padding_mask=~mask)
        return self.out(self.norm(h))

    def _memory(self, frames, lengths):
        x = self.adaptor.weighted(frames, lengths)  # (B, T, D), zero past each length
        mem, mask = self.adaptor.project(x, lengths)
        mem = mem + _sinusoid(mem.shape[1], self.d, mem.device)
        if self.stats is not None:
            g = self.stats(torch.cat(utterance_stats(x, lengths, self.stat_names), -1))
            mem = torch.cat([g[:, None], mem], 1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        if self.encoder is not None:
            mem = self.encoder(mem, src_key_padding_mask=~mask)
        return mem, mask

    def loss(self, frames, lengths, captions) -> torch.Tensor:
        mem, mask = self._memory(frames, lengths)
        seqs = self.encode_targets(captions)
        n = max(len(s) for s in seqs) + 1
        inp = torch.full((len(seqs), n), PAD, dtype=torch.long)
        tgt = torch.full((len(seqs), n), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            inp[i, : len(s) + 1] = torch.tensor([BOS] + s)
            tgt[i, : len(s) + 1] = torch.tensor(s + [EOS])
        logits = self._decode(inp.to(mem.device), mem, mask)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.to(mem.device).reshape(-1),
                               ignore_index=-100, label_smoothing=self.label_smoothing if self.training else 0.0)

    @torch.no_grad()
    def generate(self, frames, lengths, num_beams: int = 1, max_len: int = 30, length_penalty: float = 1.0
                 ) -> list[str]:
        mem, mask = self._memory(frames, lengths)
        if num_beams <= 1:
            ys = torch.full((mem.shape[0], 1), BOS, dtype=torch.long, device=mem.device)
            done = torch.zeros(mem.shape[0], dtype=torch.bool, device=mem.device)
            for _ in range(max_len):
                nxt = self._decode(ys, mem, mask)[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
                ys = torch.cat([ys, nxt[:, None]], 1)
                done |= nxt == EOS
                if done.all():
                    break
            return [self.tok.decode(y[1:].tolist()) for y in ys]
        return [self.tok.decode(self._beam(mem[b:b + 1], mask[b:b + 1], num_beams, max_len, length_penalty))
                for b in range(mem.shape[0])]

    def _beam(self, mem, mask, k, max_len, alpha) -> list[int]:
        """Beam search for one utterance; hypotheses scored by sum log p / length**alpha (as HF generate)."""
        beams = [([BOS], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_len):
            ys = torch.tensor([b[0] for b in beams], device=mem.device)
            logp = torch.log_softmax(self._decode(ys, mem.expand(len(beams), -1, -1),
                                                  mask.expand(len(beams), -1))[:, -1].float(), -1)
            cand = (torch.tensor([b[1] for b in beams], device=mem.device)[:, None] + logp).reshape(-1)
            top = torch.topk(cand, min(2 * k, cand.numel()))
            nxt = []
            for score, idx in zip(top.values.tolist(), top.indices.tolist()):
                bi, tok = divmod(idx, logp.shape[1])
                seq = beams[bi][0] + [tok]
                if tok == EOS:
                    finished.append((seq[1:], score / (len(seq) - 1) ** alpha))
                else:
                    nxt.append((seq, score))
                if len(nxt) == k:
                    break
            beams = nxt
            # stop when no open beam can beat the best finished one (scores only fall as beams grow)
            if not beams or len(finished) >= k and max(f[1] for f in finished) >= max(
                    b[1] / (len(b[0]) - 1) ** alpha for b in beams):
                break
        if not finished:
            finished = [(b[0][1:], b[1] / (len(b[0]) - 1) ** alpha) for b in beams]
        return max(finished, key=lambda f: f[1])[0]


def _check_dir(conf: dict) -> Path:
    d = conf.get("decoder_dir")
    if not d:
        raise ValueError(f"decoder {conf['decoder']}: set decoder_dir (a local Hugging Face model directory)")
    d = Path(d)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"decoder_dir {d} has no config.json: {conf['decoder']} needs a local Hugging "
                                "Face model directory (with its tokenizer files); models are never downloaded")
    return d


class _HFBase(nn.Module):
    own_tokenizer = False   # the pretrained model's, from decoder_dir (or tokenizer_dir)

    def truncation_note(self) -> str | None:
        """What the model cut of its inputs while training (a warning for train.log), or None."""
        return None

    def _hf_tokenizer(self, d: Path):
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(d))
        if tok.eos_token_id is None:
            raise ValueError(f"{d}: the tokenizer has no eos token")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    def _freeze(self, model: nn.Module, keep: Sequence[str] = ()) -> None:
        for name, p in model.named_parameters():
            p.requires_grad = any(k in name for k in keep)

    def _ids(self, captions) -> list[list[int]]:
        return [self.tok(c, add_special_tokens=False)["input_ids"][: self.max_tokens] for c in captions]

    def token_lengths(self, captions: Sequence[str]) -> list[int]:
        return [len(x) for x in self.tok(list(captions), add_special_tokens=False)["input_ids"]]

    def _texts(self, ids) -> list[str]:
        return [t.strip() for t in self.tok.batch_decode(ids, skip_special_tokens=True)]

    def _gen_kw(self, num_beams, max_len) -> dict:
        return {"max_new_tokens": max_len, "num_beams": num_beams, "do_sample": False,
                "eos_token_id": self.tok.eos_token_id, "pad_token_id": self.tok.pad_token_id}


@register("decoder", "qwen2")
@register("decoder", "gpt2")
class CausalLMCaptioner(_HFBase):
    """GPT-2 (cross-attention or prefix) or Qwen-2 (prefix) from a local HF dir."""

    def __init__(self, conf: dict, num_layers: int, dim: int, tokenizer: Tokenizer | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM
        d = _check_dir(conf)
        self.mode = conf["decoder_conf"].get("mode", "prefix")
        if self.mode not in ("prefix", "cross"):
            raise ValueError(f"decoder_conf.mode must be prefix or cross, got {self.mode!r}")
        hf_conf = AutoConfig.from_pretrained(str(d))
        if self.mode == "cross" and hf_conf.model_type != "gpt2":
            raise ValueError(f"{d}: mode cross needs a GPT-2 family model (it is {hf_conf.model_type}); use prefix")
        kw = {"add_cross_attention": True} if self.mode == "cross" else {}
        self.lm = AutoModelForCausalLM.from_pretrained(str(d), **kw)
        self.tok = self._hf_tokenizer(Path(conf.get("tokenizer_dir") or d))
        self.bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        self.max_tokens = int(conf["max_caption_tokens"])
        self.prefix_len = int(conf["decoder_conf"].get("prefix_len", 16))
        hidden = self.lm.get_input_embeddings().embedding_dim
        n_pos = getattr(self.lm.config, "n_positions", None) or getattr(self.lm.config, "max_position_embeddings", None)
        need = self.max_tokens + 1 + (self.prefix_len if self.mode == "prefix" else 0)
        if n_pos is not None and need > n_pos:
            raise ValueError(f"{d}: max_caption_tokens {self.max_tokens} + 1"
                             + (f" + prefix_len {self.prefix_len}" if self.mode == "prefix" else "")
                             + f" = {need} exceeds the decoder's {n_pos} positions; lower max_caption_tokens")
        self.adaptor = Adaptor(num_layers, dim, hidden, **conf["adaptor_conf"])
        if conf["freeze_decoder"]:
            self._freeze(self.lm, ("crossattention", "ln_cross_attn"))

    def loss(self, frames, lengths, captions) -> torch.Tensor:
        mem, mask = self.adaptor(frames, lengths)
        seqs = [s + [self.tok.eos_token_id] for s in self._ids(captions)]
        n, dev = max(map(len, seqs)), mem.device
        ids = torch.full((len(seqs), n), self.tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(seqs), n), -100, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], labels[i, : len(s)], att[i, : len(s)] = torch.tensor(s), torch.tensor(s), 1
        ids, labels, att = ids.to(dev), labels.to(dev), att.to(dev)
        if self.mode == "cross":
            bos = torch.full((len(seqs), 1), self.bos, dtype=torch.long, device=dev)
            one = torch.ones_like(bos)
            out = self.lm(input_ids=torch.cat([bos, ids], 1), attention_mask=torch.cat([one, att], 1),
                          labels=torch.cat([torch.full_like(bos, -100), labels], 1),
                          encoder_hidden_states=mem, encoder_attention_mask=mask.long())
            return out.loss
        prefix = fixed_prefix(mem, mask, self.prefix_len)
        emb = torch.cat([prefix, self.lm.get_input_embeddings()(ids)], 1)
        p = torch.ones(prefix.shape[:2], dtype=torch.long, device=dev)
        out = self.lm(inputs_embeds=emb, attention_mask=torch.cat([p, att], 1),
                      labels=torch.cat([torch.full_like(p, -100), labels], 1))
        return out.loss

    @torch.no_grad()
    def generate(self, frames, lengths, num_beams=1, max_len=30, length_penalty=1.0) -> list[str]:
        mem, mask = self.adaptor(frames, lengths)
        kw = {**self._gen_kw(num_beams, max_len), "length_penalty": length_penalty}
        if self.mode == "cross":
            bos = torch.full((mem.shape[0], 1), self.bos, dtype=torch.long, device=mem.device)
            out = self.lm.generate(input_ids=bos, attention_mask=torch.ones_like(bos), encoder_hidden_states=mem,
                                   encoder_attention_mask=mask.long(), **kw)
            return self._texts(out[:, 1:])
        prefix = fixed_prefix(mem, mask, self.prefix_len)
        att = torch.ones(prefix.shape[:2], dtype=torch.long, device=mem.device)
        out = self.lm.generate(inputs_embeds=prefix, attention_mask=att, **kw)
        return self._texts(out)


@register("decoder", "bart")
class BartCaptioner(_HFBase):
    def __init__(self, conf: dict, num_layers: int, dim: int, tokenizer: Tokenizer | None = None):
        super().__init__()
        from transformers import BartForConditionalGeneration
        d = _check_dir(conf)
        self.bart = BartForConditionalGeneration.from_pretrained(str(d))
        self.tok = self._hf_tokenizer(Path(conf.get("tokenizer_dir") or d))
        self.input = conf["decoder_conf"].get("bart_input", "encoder")
        if self.input not in ("encoder", "encoder_outputs"):
            raise ValueError(f"decoder_conf.bart_input must be encoder or encoder_outputs, got {self.input!r}")
        self.max_tokens = int(conf["max_caption_tokens"])
        self.max_pos = int(self.bart.config.max_position_embeddings)
        if self.max_tokens + 2 > self.max_pos:
            raise ValueError(f"{d}: max_caption_tokens {self.max_tokens} + 2 exceeds BART's {self.max_pos} positions")
        self.adaptor = Adaptor(num_layers, dim, int(self.bart.config.d_model), **conf["adaptor_conf"])
        if conf["freeze_decoder"]:
            self._freeze(self.bart)
        self.truncated_inputs = 0

    def _enc(self, frames, lengths) -> dict:
        mem, mask = self.adaptor(frames, lengths)
        if self.input == "encoder" and mem.shape[1] > self.max_pos:
            # BART's encoder has max_position_embeddings positions: keep the first ones
            self.truncated_inputs += int((mask.sum(1) > self.max_pos).sum())
            mem, mask = mem[:, : self.max_pos], mask[:, : self.max_pos]
        if self.input == "encoder":
            return {"inputs_embeds": mem, "attention_mask": mask.long()}
        from transformers.modeling_outputs import BaseModelOutput
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=mem), "attention_mask": mask.long()}

    def loss(self, frames, lengths, captions) -> torch.Tensor:
        enc = self._enc(frames, lengths)
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        seqs = [bos + s + [self.tok.eos_token_id] for s in self._ids(captions)]
        labels = torch.full((len(seqs), max(map(len, seqs))), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            labels[i, : len(s)] = torch.tensor(s)
        return self.bart(**enc, labels=labels.to(frames.device)).loss

    @torch.no_grad()
    def generate(self, frames, lengths, num_beams=1, max_len=30, length_penalty=1.0) -> list[str]:
        enc = self._enc(frames, lengths)
        out = self.bart.generate(**enc, **self._gen_kw(num_beams, max_len + 2), length_penalty=length_penalty)
        return self._texts(out)

    def truncation_note(self) -> str | None:
        if not self.truncated_inputs:
            return None
        return (f"{self.truncated_inputs} training/validation input(s) were longer than BART's {self.max_pos} "
                "encoder positions and were cut")


def build_model(conf: dict, num_layers: int, dim: int, tokenizer: Tokenizer | None = None) -> nn.Module:
    """The registered decoder ``conf["decoder"]``; one with ``own_tokenizer`` needs the training captions'."""
    cls = models.get("decoder", conf["decoder"])
    if cls.own_tokenizer and tokenizer is None:
        raise ValueError(f"the {conf['decoder']} decoder needs the tokenizer of the training captions")
    return cls(conf, num_layers, dim, tokenizer)


def trainable_state(model: nn.Module) -> dict:
    """What a checkpoint needs: every parameter that trains, plus buffers; frozen decoder weights come from
    decoder_dir again at load time."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names or k not in frozen}

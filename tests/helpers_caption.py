"""Tiny captioning fixtures: template captions tied to synthetic frame features, and tiny random Hugging Face
decoders (GPT-2, Qwen-2, BART) with a byte-level BPE tokenizer trained in the test, saved as local dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etser.datadir import write_table
from tests.helpers_feats import write_dump

# attribute -> words; frames carry the attribute as an offset on one dimension
PITCH = ["high", "low"]
SPEED = ["fast", "slow", "steady"]
ZH_PITCH = ["高亢", "低沉"]
ZH_SPEED = ["快速", "缓慢", "平稳"]


def caption_for(p: int, s: int, variant: int, lang: str) -> str:
    if lang == "zh":
        return [f"一位声音{ZH_PITCH[p]}的说话人{ZH_SPEED[s]}地说话",
                f"说话人声音{ZH_PITCH[p]}，语速{ZH_SPEED[s]}"][variant % 2]
    return [f"a speaker with a {PITCH[p]} voice talks {SPEED[s]}",
            f"the voice is {PITCH[p]} and the pace is {SPEED[s]}"][variant % 2]


def make_caption_corpus(root: Path, sizes=None, lang: str = "en", num_layers: int = 3, dim: int = 24,
                        frame_layers=(1, 2), seed: int = 0, kinds=("speaker", "style", "emotion", "overall"),
                        tag: str = "synthetic_0123abcd", noise: float = 2.0) -> tuple[Path, Path]:
    """data/<set>/utt2caption_<kind> + utt2spk + dump/<tag>/<set>: pitch shifts dim 0, speed dims 1-3, the
    template dim 4; every frame also carries N(0, noise) on every dimension."""
    sizes = sizes or {"train": 60, "val": 12, "test": 12}
    rng = np.random.default_rng(seed)
    data_dir, feats_dir = root / "data", root / "dump" / tag
    for set_name, n in sizes.items():
        d = data_dir / set_name
        d.mkdir(parents=True, exist_ok=True)
        utts = [f"S{i % 4 + 1:02d}-{set_name}{i:04d}" for i in range(n)]
        frames, caps = {}, {}
        for i, u in enumerate(utts):
            p, s, v = int(rng.integers(2)), int(rng.integers(3)), int(rng.integers(2))
            t = int(rng.integers(8, 24))
            x = rng.normal(scale=noise, size=(t, num_layers, dim)).astype(np.float32)
            x[:, :, 0] += 2.0 * (p - 0.5)
            x[:, :, 1 + s] += 2.0
            x[:, :, 4] += 2.0 * v  # the template (wording) is visible too, so the whole caption is learnable
            frames[u] = x
            caps[u] = caption_for(p, s, v, lang)
        write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})
        for kind in kinds:
            write_table(d / f"utt2caption_{kind}", caps)
        write_dump(feats_dir / set_name, frames, frame_layers)
    return data_dir, feats_dir


def tiny_tokenizer(out: Path, texts=None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = texts or ([caption_for(p, s, v, lang) for p in range(2) for s in range(3) for v in range(2)
                       for lang in ("en", "zh")] * 3)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(str(out))
    return tok


def tiny_decoder_dir(out: Path, family: str, seed: int = 0) -> Path:
    """A randomly initialised tiny ``gpt2`` / ``qwen2`` / ``bart`` saved with its tokenizer in ``out``."""
    import torch
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel,
                              Qwen2Config, Qwen2ForCausalLM)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(out)
    ids = dict(vocab_size=len(tok), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2, **ids))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=128, **ids))
    elif family == "bart":
        model = BartForConditionalGeneration(BartConfig(
            d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, decoder_start_token_id=2,
            forced_bos_token_id=None, **ids))
    else:
        raise ValueError(family)
    model.save_pretrained(str(out))
    return out


def _vocab_texts():
    return [caption_for(p, s, v, lang) for p in range(2) for s in range(3) for v in range(2) for lang in ("en", "zh")]


def tiny_bert_dir(out: Path, seed: int = 0, classifier_labels=None) -> Path:
    """A tiny random BERT with a WordPiece vocabulary of the template words and characters (BertTokenizer);
    ``classifier_labels``: save a multi-label BertForSequenceClassification with those labels instead."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    words = sorted({w for t in _vocab_texts() for w in t.replace("，", " ").split()
                    if w.isascii()} | {c for t in _vocab_texts() for c in t if not c.isascii()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list("abcdefghijklmnopqrstuvwxyz")
    (out / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(str(out))
    cfg = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    if classifier_labels:
        cfg.num_labels = len(classifier_labels)
        cfg.id2label = dict(enumerate(classifier_labels))
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
        cfg.problem_type = "multi_label_classification"
        BertForSequenceClassification(cfg).save_pretrained(str(out))
    else:
        BertModel(cfg).save_pretrained(str(out))
    return out


def tiny_clap_dir(out: Path, seed: int = 0) -> Path:
    """A tiny random ClapModel (HTSAT audio tower, 16 mel bins) with a ClapProcessor at 16 kHz."""
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, ClapTextConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(out)
    tc = ClapTextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0, projection_dim=16)
    ac = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                         hidden_size=32, depths=[1, 1], num_heads=[2, 2], patch_embeds_hidden_size=16,
                         projection_dim=16, enable_fusion=False)
    torch.manual_seed(seed)
    ClapModel(ClapConfig(text_config=tc.to_dict(), audio_config=ac.to_dict(), projection_dim=16)
              ).save_pretrained(str(out))
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=1, fft_window_size=512,
                              hop_length=160, truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(out))
    return out

"""Caption tokenizer and models: special tokens, Chinese/English units, the four decoders on tiny random
configs (loss, backward, greedy and beam decoding), beam search vs greedy, freezing, missing dirs."""

from __future__ import annotations

import pytest
import torch

from etser.models.decoders import ScratchCaptioner, build_model, trainable_state
from etser.caption.text import BOS, EOS, UNK, Tokenizer
from etser.caption.train import DEFAULTS, load_config
from tests.helpers_caption import caption_for, tiny_decoder_dir


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    return {f: tiny_decoder_dir(root / f, f) for f in ("gpt2", "qwen2", "bart")}


def _conf(decoder, **kw):
    conf = {**DEFAULTS, "decoder": decoder, "adaptor_conf": {"hidden_dim": 16, "downsample": 2},
            "decoder_conf": {}, "max_caption_tokens": 20}
    conf.update(kw)
    return conf


def test_tokenizer_units_specials_and_roundtrip(tmp_path):
    zh = Tokenizer.build(["男性大声说话。", "女性 轻声说话"])
    assert zh.unit == "char" and zh.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert zh.decode(zh.encode("女性大声说话")) == "女性大声说话"  # punctuation and spaces are not tokens
    assert zh.encode("猫")[0] == UNK
    en = Tokenizer.build(["A man speaks, loudly.", "a woman speaks"])
    assert en.unit == "word" and en.decode(en.encode("a man speaks") + [EOS, 5]) == "a man speaks"
    en.save(tmp_path / "tok.json")
    back = Tokenizer.load(tmp_path / "tok.json")
    assert back.itos == en.itos and back.unit == "word"
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        Tokenizer.load(tmp_path / "nope.json")


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 12, 2, 8, generator=g), torch.tensor([12, 7, 3])


@pytest.mark.parametrize("family,dconf", [("gpt2", {"mode": "cross"}), ("gpt2", {"mode": "prefix", "prefix_len": 4}),
                                          ("qwen2", {"mode": "prefix", "prefix_len": 4}),
                                          ("bart", {"bart_input": "encoder"}),
                                          ("bart", {"bart_input": "encoder_outputs"})])
def test_pretrained_decoders_train_and_decode(decoder_dirs, family, dconf):
    d = decoder_dirs[family]
    model = build_model(_conf(family, decoder_dir=str(d), decoder_conf=dconf), 2, 8)
    frames, lengths = _batch()
    caps = [caption_for(0, 1, 0, "en"), caption_for(1, 2, 1, "zh"), "a"]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = model.loss(frames, lengths, caps)
    for _ in range(3):
        loss = model.loss(frames, lengths, caps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(first) and loss.item() < first.item()
    model.eval()
    greedy = model.generate(frames, lengths, num_beams=1, max_len=6)
    beam = model.generate(frames, lengths, num_beams=3, max_len=6)
    assert len(greedy) == len(beam) == 3 and all(isinstance(t, str) for t in greedy + beam)


def test_freeze_trains_only_adaptor_and_new_cross_attention(decoder_dirs):
    d = decoder_dirs["gpt2"]
    model = build_model(_conf("gpt2", decoder_dir=str(d), decoder_conf={"mode": "cross"}, freeze_decoder=True), 2, 8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("adaptor.") for n in trainable)
    assert all(n.startswith("adaptor.") or "crossattention" in n or "ln_cross_attn" in n for n in trainable)
    state = trainable_state(model)
    assert "lm.transformer.wte.weight" not in state and set(trainable) <= set(state)


def test_missing_decoder_dir_is_one_message_before_work(tmp_path):
    cfg = tmp_path / "gpt2.yaml"
    cfg.write_text(f"decoder: gpt2\ndecoder_dir: {tmp_path / 'absent'}\n")
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model directory"):
        load_config(cfg)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg.write_text(f"decoder: gpt2\ndecoder_dir: {tmp_path / 'model'}\ntokenizer_dir: {tmp_path / 'absent'}\n")
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        load_config(cfg)


def _seq_logprob(model: ScratchCaptioner, frames, lengths, ids):
    mem, mask = model._memory(frames, lengths)
    ys = torch.tensor([[BOS] + ids])
    logp = torch.log_softmax(model._decode(ys, mem, mask)[0], -1)
    tgt = ids + [EOS]
    return sum(logp[i, t].item() for i, t in enumerate(tgt)) / len(tgt)


def test_scratch_beam_search_scores_at_least_greedy():
    tok = Tokenizer.build([caption_for(p, s, v, "en") for p in range(2) for s in range(3) for v in range(2)])
    torch.manual_seed(0)
    conf = _conf("transformer", decoder_conf={"d_model": 32, "nhead": 2, "num_layers": 1, "ffn_dim": 64})
    model = ScratchCaptioner(conf, 2, 8, tok).eval()
    frames, lengths = _batch(1)
    for b in range(3):
        f, n = frames[b:b + 1], lengths[b:b + 1]
        greedy = model.generate(f, n, num_beams=1, max_len=8)[0]
        assert model.generate(f, n, num_beams=1, max_len=8) == [greedy]
        # hypotheses stopped by max_len count as they are; compare complete ones only
        g_ids = model._beam(model._memory(f, n)[0], model._memory(f, n)[1], 1, 8, 1.0)
        b_ids = model._beam(model._memory(f, n)[0], model._memory(f, n)[1], 4, 8, 1.0)
        assert tok.decode(g_ids) == greedy
        assert _seq_logprob(model, f, n, b_ids) >= _seq_logprob(model, f, n, g_ids) - 1e-6


def test_caption_limit_beyond_decoder_positions_is_refused(decoder_dirs):
    conf = _conf("qwen2", decoder_dir=str(decoder_dirs["qwen2"]), decoder_conf={"prefix_len": 16},
                 max_caption_tokens=120)
    with pytest.raises(ValueError, match="exceeds the decoder's 128 positions"):
        build_model(conf, 2, 8)


def test_global_normalisation_standardises_with_training_stats_and_keeps_loudness():
    from etser.models.decoders import Adaptor, frame_stats
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(t, 2, 3, generator=g) * 4 + 7 for t in (5, 9)]
    mean, std = frame_stats(frames)
    flat = torch.cat(frames).double()
    assert torch.allclose(mean.double(), flat.mean(0), atol=1e-5)
    assert torch.allclose(std.double(), flat.std(0, unbiased=False), atol=1e-5)
    a = Adaptor(2, 3, 4, hidden_dim=4, downsample=1, kind="linear", dropout=0.0, normalize="global").eval()
    a.feat_mean.copy_(mean), a.feat_std.copy_(std)
    b = Adaptor(2, 3, 4, hidden_dim=4, downsample=1, kind="linear", dropout=0.0, normalize=False).eval()
    b.load_state_dict(a.state_dict())
    x = frames[0][None]
    lengths = torch.tensor([5])
    assert torch.allclose(a(x, lengths)[0], b((x - mean) / std, lengths)[0], atol=1e-5)
    # a louder copy (every dimension +3) stays distinguishable, unlike with the per-frame layer norm
    c = Adaptor(2, 3, 4, hidden_dim=4, downsample=1, kind="linear", dropout=0.0, normalize=True).eval()
    c.load_state_dict(a.state_dict())
    assert torch.allclose(c(x, lengths)[0], c(x + 3, lengths)[0], atol=1e-4)
    assert not torch.allclose(a(x, lengths)[0], a(x + 3, lengths)[0], atol=1e-2)
    assert "adaptor.feat_mean" in trainable_state(torch.nn.ModuleDict({"adaptor": a}))
    with pytest.raises(ValueError, match="normalize must be"):
        Adaptor(2, 3, 4, normalize="frame")


def test_stats_token_statistics_ignore_padding_and_delta_follows_the_rate():
    from etser.models.decoders import utterance_stats
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 3, 1])
    x = torch.randn(3, 6, 2, generator=g) * (torch.arange(6)[None] < lengths[:, None])[..., None]
    mean, std, delta = utterance_stats(x, lengths, ("mean", "std", "delta"))
    for b, n in enumerate(lengths.tolist()):
        v = x[b, :n]
        assert torch.allclose(mean[b], v.mean(0), atol=1e-6)
        assert torch.allclose(std[b], v.std(0, unbiased=False), atol=1e-5)
        want = (v[1:] - v[:-1]).abs().mean(0) if n > 1 else torch.zeros(2)
        assert torch.allclose(delta[b], want, atol=1e-6)
    # the same up-and-down contour at twice the rate: the same mean and std, twice the delta
    slow = torch.tensor([0., 0., 1., 1.] * 4)[None, :, None]
    fast = torch.tensor([0., 1.] * 8)[None, :, None]
    n16 = torch.tensor([16])
    (ms, ss, ds), (mf, sf, df) = (utterance_stats(v, n16, ("mean", "std", "delta")) for v in (slow, fast))
    assert torch.equal(ms, mf) and torch.equal(ss, sf) and df.item() > 1.9 * ds.item()


@pytest.mark.parametrize("stats,width", [(True, 2), ([], None), (False, None), (["mean", "std", "delta"], 3),
                                         (["delta"], 1)])
def test_stats_token_config_sets_the_memory_vector(stats, width):
    tok = Tokenizer.build([caption_for(p, s, v, "en") for p in range(2) for s in range(3) for v in range(2)])
    conf = _conf("transformer", decoder_conf={"d_model": 32, "nhead": 2, "num_layers": 1, "ffn_dim": 64,
                                              "stats_token": stats})
    model = ScratchCaptioner(conf, 2, 8, tok).eval()
    frames, lengths = _batch(1)
    mem, mask = model._memory(frames, lengths)
    if width is None:
        assert model.stats is None
    else:
        assert model.stats.in_features == width * 8
        assert mask[:, 0].all()      # the statistics vector leads the memory
    assert len(model.generate(frames, lengths, num_beams=2, max_len=4)) == len(lengths)


@pytest.mark.parametrize("stats", [["median"], 5, "mean"])
def test_unknown_stats_token_statistic_is_refused(stats):
    tok = Tokenizer.build(["a b"])
    with pytest.raises(ValueError, match="stats_token must be true, false or a list of mean, std, delta"):
        ScratchCaptioner(_conf("transformer", decoder_conf={"stats_token": stats}), 2, 8, tok)

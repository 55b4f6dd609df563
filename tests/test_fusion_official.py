"""The official EmotionTalk/MERBench code's model details, each a conf key of its fusion model.

Every detail is checked on its own (its key alone) and under ``official: true``; each test fails if the detail
is lost (the model ignoring the key, or doing our behaviour under it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from etser.models.fusion import FUSION_MODELS
from etser.models.fusion import mfm as mfm_module
from etser.learn.tune import load_search_space
from helpers_fusion import inputs, small

CONF = Path(__file__).resolve().parents[1] / "conf" / "fusion"
DETAILED = sorted(n for n, cls in FUSION_MODELS.items() if cls.official_details)


def test_the_algorithms_with_official_details():
    # TFN, MFN and MMIM match the official code (docs/fusion.md); the others each have details
    assert DETAILED == ["attention", "graph_mfn", "lmf", "mctn", "mfm", "misa", "mult"]


@pytest.mark.parametrize("name", DETAILED)
def test_official_switch_selects_every_detail_and_a_key_overrides_it(name):
    cls = FUSION_MODELS[name]
    ours = small(name)
    official = small(name, official=True)
    for key, (mine, theirs) in cls.official_details.items():
        assert mine != theirs
        assert ours.detail(key) == mine and official.detail(key) == theirs
        assert small(name, **{key: theirs}).detail(key) == theirs      # alone
        assert small(name, official=True, **{key: mine}).detail(key) == mine  # official but this one ours
    # the YAML lists the switch and every detail, unset, so the recipe's default is ours
    conf = load_search_space(CONF / f"{name}.yaml")["model"]
    assert conf["official"] is False
    assert all(conf[key] is None for key in cls.official_details)


@pytest.mark.parametrize("name", DETAILED)
def test_official_models_run_forward_and_backward(name):
    model = small(name, official=True)
    x, lens = inputs(model)
    out = model(x, lens)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_loss)
    (out.logits.sum() + out.aux_loss).backward()


# ---- Attention ---------------------------------------------------------------------------------------------

def _attention_weights(model, x):
    hs = [model.encoders[m](x[m]) for m in model.modalities]
    return hs, model.scorer(torch.cat(hs, 1))


@pytest.mark.parametrize("conf", [{"raw_weights": True}, {"official": True}])
def test_attention_raw_weights_are_not_normalised(conf):
    model = small("attention", **conf).eval()
    x, _ = inputs(model)
    with torch.no_grad():
        hs, scores = _attention_weights(model, x)
        fused = model(x).features
    assert torch.allclose(fused, (torch.stack(hs, 1) * scores.unsqueeze(-1)).sum(1), atol=1e-6)
    assert not torch.allclose(scores.sum(1), torch.ones(len(scores)), atol=1e-3)  # raw: no softmax


def test_attention_ours_normalises_the_weights():
    model = small("attention").eval()
    x, _ = inputs(model)
    with torch.no_grad():
        hs, scores = _attention_weights(model, x)
        fused = model(x).features
    weights = torch.softmax(scores, 1)
    assert torch.allclose(fused, (torch.stack(hs, 1) * weights.unsqueeze(-1)).sum(1), atol=1e-6)


def test_attention_raw_weights_a_missing_modality_contributes_nothing():
    model = small("attention", raw_weights=True).eval()
    x, _ = inputs(model)
    present = {m: torch.tensor([True, False, True, True]) if m == "visual" else torch.ones(4, dtype=torch.bool)
               for m in model.modalities}
    changed = {**x, "visual": x["visual"] + 100.0 * (1 + torch.arange(4.0))[:, None]}
    with torch.no_grad():
        a, b = model(x, present=present).logits, model(changed, present=present).logits
    assert torch.equal(a[1], b[1]) and not torch.allclose(a[0], b[0])


@pytest.mark.parametrize("conf", [{"merbench_scorer": True}, {"official": True}])
def test_attention_merbench_scorer_is_three_layers_with_input_dropout(conf):
    linears = [mod for mod in small("attention", **conf).scorer.modules() if isinstance(mod, nn.Linear)]
    assert len(linears) == 4 and [m.out_features for m in linears] == [16, 16, 16, 3]
    first = next(m for m in small("attention", **conf).scorer.modules() if not list(m.children()))
    assert isinstance(first, nn.Dropout)
    assert sum(isinstance(m, nn.Linear) for m in small("attention").scorer.modules()) == 2


def _logits_are_out_of_features(model):
    """In training mode: are the logits exactly the output layer of the features (no dropout between)?"""
    model.train()
    x, lens = inputs(model)
    torch.manual_seed(3)
    out = model(x, lens)
    return torch.allclose(out.logits, model.out(out.features), atol=1e-6)


@pytest.mark.parametrize("name", ["attention", "lmf"])
def test_no_output_dropout_under_official(name):
    assert _logits_are_out_of_features(small(name, output_dropout=False))
    assert _logits_are_out_of_features(small(name, official=True))
    assert not _logits_are_out_of_features(small(name, dropout=0.5))


# ---- LMF, MISA ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lmf", "misa"])
def test_half_output(name):
    for model in (small(name, half_output=True), small(name, official=True)):
        x, lens = inputs(model)
        assert model(x, lens).features.shape == (4, 8)  # hidden_dim 16
    model = small(name)
    assert model(*inputs(model)).features.shape == (4, 16)


def test_misa_transformer_has_torch_default_sizes():
    for model in (small("misa", torch_transformer=True), small("misa", official=True)):
        layer = model.transformer.layers[0]
        assert layer.linear1.out_features == 2048 and layer.dropout.p == 0.1
    layer = small("misa", dropout=0.3).transformer.layers[0]
    assert layer.linear1.out_features == 32 and layer.dropout.p == 0.3


# ---- MulT --------------------------------------------------------------------------------------------------

def _mult_memory_outputs(model, x, lens):
    seen = {}
    hooks = [model.memory[m].register_forward_hook(lambda mod, a, out, m=m: seen.__setitem__(m, out.detach()))
             for m in model.modalities]
    with torch.no_grad():
        model(x, lens)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("conf", [{"causal_mask": True}, {"official": True}])
def test_mult_causal_mask_hides_the_future_frames(conf):
    model = small("mult", conv1d_kernel_size=1, **conf).eval()
    t = 6
    x = {m: torch.randn(2, t, d, generator=torch.Generator().manual_seed(i)) for i, (m, d) in
         enumerate(model.input_dims.items())}
    lens = {m: torch.full((2,), t) for m in model.modalities}
    later = {**x, "speech": x["speech"].clone()}
    later["speech"][:, 3:] += 5.0
    a, b = _mult_memory_outputs(model, x, lens), _mult_memory_outputs(model, later, lens)
    # the text branch at frames 0..2 never sees speech frames 3..5; at the last frame it does
    assert torch.allclose(a["text"][:, :3], b["text"][:, :3], atol=1e-5)
    assert not torch.allclose(a["text"][:, 3:], b["text"][:, 3:], atol=1e-3)


def test_mult_without_causal_mask_early_frames_see_the_future():
    model = small("mult", conv1d_kernel_size=1).eval()
    x = {m: torch.randn(2, 6, d, generator=torch.Generator().manual_seed(i)) for i, (m, d) in
         enumerate(model.input_dims.items())}
    lens = {m: torch.full((2,), 6) for m in model.modalities}
    later = {**x, "speech": x["speech"].clone()}
    later["speech"][:, 3:] += 5.0
    a, b = _mult_memory_outputs(model, x, lens), _mult_memory_outputs(model, later, lens)
    assert not torch.allclose(a["text"][:, :3], b["text"][:, :3], atol=1e-3)


def test_mult_future_mask_is_the_official_one():
    # official buffered_future_mask: triu(-inf, 1 + |T_k - T_q|)
    mask = FUSION_MODELS["mult"].future_mask(3, 5, "cpu")
    assert mask.tolist() == [[False, False, False, True, True],
                             [False, False, False, False, True],
                             [False, False, False, False, False]]


@pytest.mark.parametrize("conf", [{"valid_conv": True}, {"official": True}])
def test_mult_valid_convolution_shortens_the_sequence(conf):
    model = small("mult", conv1d_kernel_size=3, **conf).eval()
    assert all(p.padding == (0,) for p in model.proj.values())
    x, lens = inputs(model, t_max=6, lengths=(6, 4, 2, 1))
    seen = _mult_memory_outputs(model, x, lens)
    assert all(v.size(1) == 4 for v in seen.values())  # 6 - 3 + 1
    assert torch.isfinite(model(x, lens).logits).all()
    # the official code takes any kernel size, even ones
    even = small("mult", conv1d_kernel_size=2, **conf).eval()
    assert torch.isfinite(even(*inputs(even)).logits).all()


def test_mult_same_convolution_keeps_the_length():
    model = small("mult", conv1d_kernel_size=3).eval()
    assert all(p.padding == (1,) for p in model.proj.values())
    x, lens = inputs(model, t_max=6, lengths=(6, 4, 2, 1))
    assert all(v.size(1) == 6 for v in _mult_memory_outputs(model, x, lens).values())
    with pytest.raises(ValueError, match="odd"):
        small("mult", conv1d_kernel_size=2)


@pytest.mark.parametrize("conf", [{"deep_memory": True}, {"official": True}])
def test_mult_memory_is_at_least_three_layers_deep(conf):
    assert all(len(m.layers) == 3 for m in small("mult", layers=2, **conf).memory.values())
    assert all(len(m.layers) == 4 for m in small("mult", layers=4, **conf).memory.values())
    assert all(len(m.layers) == 2 for m in small("mult", layers=2).memory.values())


# ---- MFM ---------------------------------------------------------------------------------------------------

def test_mfm_kernel_divides_by_the_dimension():
    a, b = torch.randn(4, 32), torch.randn(5, 32)
    d2 = (a[:, None] - b[None]).pow(2).mean(-1)
    assert torch.allclose(mfm_module.gaussian_kernel(a, b, div_dim=True), torch.exp(-d2 / 32))
    assert torch.allclose(mfm_module.gaussian_kernel(a, b), torch.exp(-d2))


@pytest.mark.parametrize("conf,expected", [({}, False), ({"kernel_div_dim": True}, True),
                                           ({"official": True}, True)])
def test_mfm_model_uses_the_kernel_it_is_given(conf, expected, monkeypatch):
    seen = []
    real = mfm_module.mmd_to_normal
    monkeypatch.setattr(mfm_module, "mmd_to_normal", lambda z, div=False: seen.append(div) or real(z, div))
    model = small("mfm", **conf)
    model(*inputs(model))
    assert seen and set(seen) == {expected}


# ---- MCTN --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conf,mixes", [({}, False), ({"across_batch": True}, True), ({"official": True}, True)])
def test_mctn_lstm_runs_across_the_batch_under_official(conf, mixes):
    model = small("mctn", **conf).eval()
    x, lens = inputs(model, lengths=(5, 5, 5, 5))
    other = {m: v.clone() for m, v in x.items()}
    other["text"][:-1] += 3.0  # change every utterance but the last
    with torch.no_grad():
        a, b = model(x, lens).logits[-1], model(other, lens).logits[-1]
    assert torch.allclose(a, b, atol=1e-6) != mixes


@pytest.mark.parametrize("conf", [{"bidirectional": True}, {"official": True, "across_batch": False}])
def test_mctn_bidirectional_encoder_and_decoder(conf):
    model = small("mctn", **conf)
    for s2s in (model.seq2seq1, model.seq2seq2):
        assert s2s.encoder.bidirectional and isinstance(s2s.cell_back, nn.LSTMCell)
    model.eval()
    x, lens = inputs(model, lengths=(5, 5, 5, 5))
    later = {m: v.clone() for m, v in x.items()}
    later["text"][:, -1] += 3.0  # the last frame reaches the first encoder state backwards only
    enc = {}

    def keep(mod, args, out):
        enc.setdefault(0, out[0])
    model.seq2seq1.encoder.register_forward_hook(keep)
    with torch.no_grad():
        model(x, lens)
        first = nn.utils.rnn.pad_packed_sequence(enc[0], batch_first=True)[0]
        enc.clear()
        model(later, lens)
        second = nn.utils.rnn.pad_packed_sequence(enc[0], batch_first=True)[0]
    assert not torch.allclose(first[:, 0], second[:, 0], atol=1e-6)
    assert not small("mctn").seq2seq1.encoder.bidirectional


@pytest.mark.parametrize("conf,truth", [({}, False), ({"truth_feedback": True}, True), ({"official": True}, True)])
def test_mctn_non_teacher_steps_feed_the_true_frame_under_official(conf, truth):
    model = small("mctn", teacher_forcing_ratio=0.0, **conf).eval()
    x, lens = inputs(model, lengths=(5, 5, 5, 5))
    fed = []
    model.seq2seq1.cell.register_forward_pre_hook(lambda mod, args: fed.append(args[0].detach()))
    with torch.no_grad():
        model(x, lens)
    # first call of seq2seq1 translates text into visual; its step 1 is fed frame 0 of the target (or its guess)
    target = F.pad(x["visual"], (0, model.dim - x["visual"].size(-1)))
    if model.across_batch:
        target = target.transpose(0, 1)
    assert torch.allclose(fed[1][:, :model.dim], target[:, 0], atol=1e-6) == truth


@pytest.mark.parametrize("conf,counts", [({}, False), ({"padded_mse": True}, True),
                                         ({"official": True, "across_batch": False}, True)])
def test_mctn_padded_mse_counts_the_padding(conf, counts):
    model = small("mctn", **conf).eval()
    x, lens = inputs(model, lengths=(5, 3, 2, 1))
    other = {m: v.clone() for m, v in x.items()}
    other["speech"][3, 2:] += 10.0  # padding frames of the last utterance
    with torch.no_grad():
        a, b = model(x, lens).aux_loss, model(other, lens).aux_loss
    assert (not torch.isclose(a, b)) == counts


# ---- Graph-MFN ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conf", [{"frozen_vertices": True}, {"official": True}])
def test_graph_mfn_vertex_networks_receive_no_gradient_under_official(conf):
    model = small("graph_mfn", **conf).train()
    before = {k: v.clone() for k, v in model.graph.nets.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=1e-5)
    x, lens = inputs(model)
    model(x, lens).logits.sum().backward()
    assert all(p.grad is None for p in model.graph.nets.parameters())
    assert all(p.grad is not None for p in model.graph.tau.parameters())
    opt.step()
    assert all(torch.equal(v, model.graph.nets.state_dict()[k]) for k, v in before.items())
    assert "graph.nets.0_1.0.weight" in model.state_dict()  # kept in checkpoints all the same


def test_graph_mfn_vertex_networks_are_trained_by_default():
    model = small("graph_mfn").train()
    x, lens = inputs(model)
    model(x, lens).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.graph.nets.parameters())


@pytest.mark.parametrize("conf", [{"linear_graph": True}, {"official": True}])
def test_graph_mfn_linear_graph_has_unbounded_efficacies(conf):
    model = small("graph_mfn", **conf)
    acts = [m for m in model.graph.modules() if isinstance(m, (nn.ReLU, nn.Sigmoid))]
    assert acts == []
    with torch.no_grad():
        for p in model.graph.efficacy.parameters():
            p.fill_(0.5)
        eff = model.graph.efficacy(torch.ones(2, 3 * 16))
    assert eff.max() > 1.0  # a sigmoid would keep it in (0, 1)
    assert any(isinstance(m, nn.Sigmoid) for m in small("graph_mfn").graph.modules())


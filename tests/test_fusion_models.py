"""Every fusion model: shapes, masking, missing modalities, auxiliary losses, gradients, state_dict, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from etser.models.fusion import FUSION_MODELS, build_fusion
from etser.models.fusion.graph_mfn import GraphMFN
from helpers_fusion import DIMS2, DIMS3, FRAME, NAMES, SMALL, inputs, small

AUX = {"misa", "mmim", "mfm", "mctn"}


def run(model, x, lens, present=None, seed=123):
    torch.manual_seed(seed)  # MFM's MMD draws Gaussian samples
    return model(x, lens, present)


@pytest.mark.parametrize("dims", [DIMS2, DIMS3], ids=["2mod", "3mod"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name, dims):
    model = small(name, dims, output_dim=7).eval()
    assert model.modalities == tuple(dims)
    x, lens = inputs(model)
    out = run(model, x, lens)
    assert out.logits.shape == (4, 7)
    assert out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
    assert out.features is not None and out.features.shape[0] == 4
    one = small(name, dims, output_dim=1).eval()(x, lens)
    assert one.logits.shape == (4, 1)  # continuous sentiment


@pytest.mark.parametrize("name", NAMES)
def test_each_utterance_alone_matches_the_padded_batch(name):
    """Padding (filled with garbage here) and the other utterances never change an utterance's outputs."""
    model = small(name).eval()
    x, lens = inputs(model, t_max=5)
    if model.level == "frame":
        # three more padded frames of large garbage
        x = {m: torch.cat([v, 100 * torch.randn(v.size(0), 3, v.size(2))], 1) for m, v in x.items()}
    out = run(model, x, lens)
    for i in range(4):
        if model.level == "frame":
            xi = {m: v[i:i + 1, :int(lens[m][i])] for m, v in x.items()}
            li = {m: lens[m][i:i + 1] for m in x}
        else:
            xi, li = {m: v[i:i + 1] for m, v in x.items()}, None
        alone = run(model, xi, li)
        torch.testing.assert_close(alone.logits[0], out.logits[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(alone.features[0], out.features[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FRAME)
def test_padding_does_not_change_aux_loss(name):
    model = small(name).eval()
    x, lens = inputs(model, t_max=5)
    longer = {m: torch.cat([v, torch.randn(v.size(0), 4, v.size(2))], 1) for m, v in x.items()}
    torch.testing.assert_close(run(model, x, lens).aux_loss, run(model, longer, lens).aux_loss)


@pytest.mark.parametrize("name", NAMES)
def test_absent_modality_values_are_ignored(name):
    model = small(name).eval()
    x, lens = inputs(model)
    present = {m: torch.ones(4, dtype=torch.bool) for m in model.modalities}
    present["visual"] = torch.tensor([True, False, True, False])
    present["speech"] = torch.tensor([True, True, False, False])
    base = run(model, x, lens, present)
    changed = dict(x)
    for m, rows in (("visual", [1, 3]), ("speech", [2, 3])):
        changed[m] = x[m].clone()
        changed[m][rows] = 50 * torch.randn_like(changed[m][rows])
    again = run(model, changed, lens, present)
    torch.testing.assert_close(again.logits, base.logits)
    torch.testing.assert_close(again.aux_loss, base.aux_loss)
    # and a present modality does matter
    moved = dict(x)
    moved["text"] = x["text"] + 1.0
    assert not torch.allclose(run(model, moved, lens, present).logits, base.logits)


@pytest.mark.parametrize("name", NAMES)
def test_no_modality_present_is_refused(name):
    model = small(name).eval()
    x, lens = inputs(model)
    present = {m: torch.tensor([True, False, True, True]) for m in model.modalities}
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        model(x, lens, present)


def test_modality_dropout_never_drops_all_and_never_restores_an_absent_one():
    model = small("attention", modality_dropout=0.9).train()
    present = {"speech": torch.tensor([True, False] * 500), "text": torch.ones(1000, dtype=torch.bool),
               "visual": torch.tensor([False, True] * 500)}
    torch.manual_seed(0)
    kept = model._present(present, 1000, "cpu")
    stack = torch.stack([kept[m] for m in model.modalities], 1)
    orig = torch.stack([present[m] for m in model.modalities], 1)
    assert bool(stack.any(1).all())
    assert not bool((stack & ~orig).any())
    assert 0.05 < float(stack.float().mean()) < 0.5  # ~ (1 / present count) survive at p=0.9
    assert torch.equal(torch.stack(list(model.eval()._present(present, 1000, "cpu").values()), 1), orig)


@pytest.mark.parametrize("name", NAMES)
def test_aux_loss_and_every_parameter_gets_a_gradient(name):
    model = small(name).train()
    x, lens = inputs(model)
    out = run(model, x, lens)
    if name in AUX:
        assert float(out.aux_loss.detach()) > 0 and out.aux_loss.requires_grad
    else:
        assert float(out.aux_loss) == 0.0
    (out.logits.square().sum() + out.aux_loss).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not dead, f"{name}: parameters without gradient: {dead}"


def test_graph_mfn_fusion_graph_is_registered():
    model = small("graph_mfn")
    keys = model.state_dict().keys()
    for vertex in ("0_1", "0_2", "1_2", "0_1_2"):
        assert any(k.startswith(f"graph.nets.{vertex}.") for k in keys), vertex
    graph_params = {id(p) for p in model.graph.parameters()}
    assert graph_params <= {id(p) for p in model.parameters()}
    assert isinstance(model, GraphMFN) and len(list(model.graph.nets.parameters())) == 8


def test_mctn_time_axis_permuting_the_batch_permutes_the_outputs():
    model = small("mctn").eval()
    x, lens = inputs(model)
    perm = torch.tensor([2, 0, 3, 1])
    out = model(x, lens)
    px = {m: v[perm] for m, v in x.items()}
    pl = {m: v[perm] for m, v in lens.items()}
    torch.testing.assert_close(model(px, pl).logits, out.logits[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_and_seed(name):
    a, b = small(name, seed=0).eval(), small(name, seed=1).eval()
    x, lens = inputs(model=a)
    assert not torch.allclose(run(a, x, lens).logits, run(b, x, lens).logits)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(run(b, x, lens).logits, run(a, x, lens).logits)
    again = small(name, seed=0).eval()
    torch.testing.assert_close(run(again, x, lens).logits, run(a, x, lens).logits)


@pytest.mark.parametrize("name", ["mfn", "graph_mfn", "mfm", "mctn"])
def test_aligned_models_refuse_unaligned_lengths(name):
    model = small(name).eval()
    x, lens = inputs(model)
    lens["text"] = torch.tensor([4, 3, 2, 1])
    with pytest.raises(ValueError, match="aligned"):
        model(x, lens)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown fusion model 'nope'"):
        build_fusion("nope", DIMS3, 3, {})
    with pytest.raises(ValueError, match=r"unknown conf keys \['hiden_dim'\]"):
        build_fusion("attention", DIMS3, 3, {"hiden_dim": 8})
    with pytest.raises(ValueError, match="needs 2..3 modalities"):
        build_fusion("tfn", {"text": 3}, 3, {})
    model = small("mult").eval()
    x, lens = inputs(model)
    with pytest.raises(ValueError, match="lack modalities \\['visual'\\]"):
        model({m: v for m, v in x.items() if m != "visual"}, lens)
    with pytest.raises(ValueError, match="input 'text' has shape"):
        model({**x, "text": x["text"][..., :2]}, lens)
    with pytest.raises(ValueError, match="lengths of 'speech'"):
        model(x, {**lens, "speech": torch.tensor([6, 1, 1, 1])})
    with pytest.raises(ValueError, match="role"):
        build_fusion("mfm", {"text": 3, "eeg": 4}, 3, SMALL["mfm"])


def test_registry_is_the_modules_of_the_package():
    """Each algorithm registers itself from its own file under the file's name; nothing else lists them."""
    pkg = Path(__file__).resolve().parents[1] / "etser" / "models" / "fusion"
    registering = {p.stem for p in pkg.glob("*.py")
                   if p.stem != "__init__" and '@register("fusion")' in p.read_text(encoding="utf-8")}
    assert set(FUSION_MODELS) == registering
    for name, cls in FUSION_MODELS.items():
        assert cls.name == name and cls.__module__ == f"etser.models.fusion.{name}" and cls.level in ("utterance", "frame")
    assert set(FRAME) == {n for n, c in FUSION_MODELS.items() if c.level == "frame"}


@pytest.mark.parametrize("name", NAMES)
def test_training_with_missing_modalities_and_modality_dropout_stays_finite(name):
    model = small(name, modality_dropout=0.5).train()
    x, lens = inputs(model)
    present = {m: torch.ones(4, dtype=torch.bool) for m in model.modalities}
    present["text"] = torch.tensor([False, True, True, False])
    out = run(model, x, lens, present)
    (out.logits.square().sum() + out.aux_loss).backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # modality dropout is a training-time option only
    model.eval()
    torch.testing.assert_close(run(model, x, lens, present).logits, run(model, x, lens, present, seed=9).logits)


def test_modality_dropout_changes_training_outputs():
    model = small("attention", modality_dropout=0.5).train()
    model.conf["dropout"] = 0.0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    x, _ = inputs(model, batch=4)
    a, b = run(model, x, None, seed=1).logits, run(model, x, None, seed=2).logits
    assert not torch.allclose(a, b)


def test_missing_modality_patterns():
    from etser.models.fusion import modality_subsets, present_for

    subsets = modality_subsets(("speech", "text", "visual"))
    assert subsets[0] == ("speech", "text", "visual") and len(subsets) == 7 and subsets[-1] == ("visual",)
    model = small("lmf").eval()
    x, _ = inputs(model)
    for s in subsets:
        pres = present_for(s, model.modalities, 4)
        assert [bool(pres[m][0]) for m in model.modalities] == [m in s for m in model.modalities]
        out = model(x, None, pres)
        # the absent modalities' values do not matter
        other = {m: (v if m in s else torch.randn_like(v)) for m, v in x.items()}
        torch.testing.assert_close(model(other, None, pres).logits, out.logits)
    with pytest.raises(ValueError, match="non-empty subset"):
        present_for(("eeg",), model.modalities, 4)

"""Heads: pooled-cache SUPERB head equals S3PRL's frame-level order of operations; masks really mask."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import torch

from etser.models.heads import build_head, input_kind, masked_mean_std, select_layers
from etser.models.heads.attentive import AttentiveHead
from etser.models.heads.mlp import MLPHead
from etser.models.heads.paper import COPIES, PaperHead
from etser.models.heads.superb import SuperbHead
from tests.helpers_feats import make_corpus


def _batch(**stream) -> dict:
    """A one-stream batch in the etser.featset format."""
    return {"streams": {"speech": stream}}


def _stream(layers, dim) -> list[dict]:
    return [{"name": "speech", "layers": list(range(layers)), "dim": dim}]


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Random non-trivial parameters (layer weights included) so the comparison is not about zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _read_dump(set_dir, utts, num_layers, dim):
    mean_scp = kaldiio.load_scp(str(set_dir / "pooled_mean.scp"))
    mean = torch.from_numpy(np.stack([mean_scp[u] for u in utts]))
    std_scp = kaldiio.load_scp(str(set_dir / "pooled_std.scp"))
    std = torch.from_numpy(np.stack([std_scp[u] for u in utts]))
    frames_scp = kaldiio.load_scp(str(set_dir / "frames.scp"))
    seqs = [torch.from_numpy(np.array(frames_scp[u])).reshape(-1, num_layers, dim) for u in utts]
    lengths = torch.tensor([s.shape[0] for s in seqs])
    return mean, std, torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


@pytest.mark.parametrize("stats,normalize", [(("mean",), False), (("mean", "std"), True), (("std",), True)])
def test_superb_pooled_equals_frame_level(tmp_path, stats, normalize):
    """Logits from the pooled cache == logits of S3PRL's frame-level path, within 1e-5 (kaldiio round trip)."""
    num_layers, dim = 4, 16
    _, feats_dir = make_corpus(tmp_path, {"train": 24}, num_layers=num_layers, dim=dim,
                               frame_layers=range(num_layers))
    set_dir = feats_dir / "train"
    utts = sorted(kaldiio.load_scp(str(set_dir / "pooled_mean.scp")).keys())
    mean, std, frames, lengths = _read_dump(set_dir, utts, num_layers, dim)
    assert int(lengths.min()) < int(lengths.max()), "the batch must contain padding"
    torch.manual_seed(0)
    head = SuperbHead(num_layers, dim, 7, proj_dim=32, stats=stats, normalize=normalize)
    head.fit_normalizer(mean, std)
    _perturb(head)
    head.eval()
    pooled = head(_batch(mean=mean, std=std))
    framewise = head.forward_frames(frames, lengths)
    assert pooled.shape == (len(utts), 7)
    assert (pooled - framewise).abs().max().item() <= 1e-5
    assert pooled.std(0).min().item() > 1e-3, "logits should vary across utterances"


def test_superb_mean_only_is_blind_to_per_utterance_mean_normalised_features():
    """The trap of S3PRL's fbank: zero time-means make a mean-only head constant; the std term is not."""
    torch.manual_seed(0)
    frames = torch.randn(6, 50, 1, 8) * torch.linspace(0.5, 2.0, 6)[:, None, None, None]
    frames = frames - frames.mean(1, keepdim=True)   # per-utterance mean normalisation
    lengths = torch.full((6,), 50)
    mean, std = masked_mean_std(frames, lengths)
    mean_only = SuperbHead(1, 8, 4, proj_dim=16, stats=("mean",))
    _perturb(mean_only)
    logits = mean_only(_batch(mean=mean, std=std))
    assert (logits - logits[0]).abs().max().item() < 1e-5
    with_std = SuperbHead(1, 8, 4, proj_dim=16, stats=("mean", "std"))
    _perturb(with_std)
    logits = with_std(_batch(mean=mean, std=std))
    assert (logits - logits[0]).abs().max().item() > 1e-2


def test_attentive_padding_does_not_change_outputs():
    torch.manual_seed(0)
    head = AttentiveHead(2, 8, 4, hidden_dim=16, attn_dim=8, dropout=0.0)
    _perturb(head)
    head.eval()
    short = torch.randn(7, 2, 8)
    long = torch.randn(30, 2, 8)
    alone = head(_batch(frames=short[None], lengths=torch.tensor([7])))
    padded = torch.stack([torch.cat([short, 1e4 * torch.randn(23, 2, 8)]), long])  # garbage in the padding
    batch = head(_batch(frames=padded, lengths=torch.tensor([7, 30])))
    assert torch.allclose(alone[0], batch[0], atol=1e-5), (alone, batch)
    _, w = head.attention_weights(padded, torch.tensor([7, 30]))
    assert torch.all(w[0, 7:] == 0)
    assert torch.allclose(w.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="no frames"):
        head(_batch(frames=padded, lengths=torch.tensor([0, 30])))


@pytest.mark.parametrize("name,conf", [("mlp", {"hidden_dims": [32, 16], "dropout": 0.2}),
                                       ("paper", {"fusion_conf": {"hidden_dim": 16, "official": True}})])
def test_pooled_heads_use_unweighted_sum_of_last_four_layers(name, conf):
    layers = select_layers(name, {}, num_layers=13)
    assert layers == [9, 10, 11, 12]
    assert select_layers(name, {}, num_layers=1) == [0]
    head = build_head(name, conf, _stream(len(layers), 8), 4)
    assert isinstance(head, {"mlp": MLPHead, "paper": PaperHead}[name])
    assert not any("layer" in n for n, _ in head.named_parameters()), "layer sum must be fixed"
    head.eval()
    x = torch.randn(3, 4, 8)
    perm = x[:, [2, 0, 3, 1]]   # an unweighted sum does not care about the order of the layers
    assert torch.allclose(head(_batch(mean=x, std=x)), head(_batch(mean=perm, std=perm)), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_head_is_the_attention_model_fed_one_feature_three_times(seed):
    """The official unimodal rows: MERBench's attention model (official details) with the same input as audio,
    text and video; built directly with the same seed it has the same weights and gives the same outputs."""
    from etser.models.fusion import build_fusion
    from etser.models.fusion.attention import Attention

    fconf = {"hidden_dim": 16, "dropout": 0.3, "official": True}
    torch.manual_seed(seed)
    head = build_head("paper", {"fusion_conf": fconf}, _stream(4, 8), 4)
    torch.manual_seed(seed)
    direct = build_fusion("attention", {m: 8 for m in ("audio", "text", "video")}, 4, fconf)
    assert isinstance(head.model, Attention) and head.model.conf["official"] and COPIES == ("audio", "text", "video")
    assert head.model.detail("raw_weights") and head.model.detail("merbench_scorer")
    assert not head.model.detail("output_dropout")
    assert sorted(head.model.encoders) == ["audio", "text", "video"]
    own = {k.removeprefix("model."): v for k, v in head.state_dict().items() if k.startswith("model.")}
    assert own.keys() == direct.state_dict().keys()
    assert all(torch.equal(own[k], v) for k, v in direct.state_dict().items())
    head.eval()
    direct.eval()
    x = torch.randn(5, 4, 8)
    feat = x.sum(1)   # raw (normalize false): the unweighted sum of the layers' time-means
    want = direct({"audio": feat, "text": feat, "video": feat}).logits
    assert torch.allclose(head(_batch(mean=x, std=x)), want, atol=1e-6)
    # three encoders of their own: different inputs per copy would change the output (not one encoder reused)
    other = direct({"audio": feat, "text": torch.zeros_like(feat), "video": feat}).logits
    assert not torch.allclose(other, want)


def test_normalizer_survives_constant_statistic():
    """A statistic constant over utterances (CMVN'd fbank's std == 1) must not be blown up to noise."""
    head = SuperbHead(1, 4, 2, stats=("mean", "std"), normalize=True)
    mean = torch.randn(50, 1, 4)
    std = torch.ones(50, 1, 4) + 1e-7 * torch.randn(50, 1, 4)
    head.fit_normalizer(mean, std)
    assert head.norm_std(std).abs().max().item() < 1e-2
    # frames are standardised with the total std (within-utterance std 1 + between-utterance spread)
    expected = (mean.var(0, unbiased=False) / (mean.var(0, unbiased=False) + 1)).sqrt()
    assert torch.allclose(head.norm_mean(mean).std(0, unbiased=False), expected, atol=1e-5)


def test_build_head_errors():
    with pytest.raises(ValueError, match="unknown head"):
        build_head("nope", {}, _stream(1, 4), 2)
    with pytest.raises(ValueError, match="bad head_conf"):
        build_head("superb", {"projdim": 3}, _stream(1, 4), 2)
    with pytest.raises(ValueError, match="stats"):
        build_head("superb", {"stats": ["max"]}, _stream(1, 4), 2)
    with pytest.raises(ValueError, match="frame_layers"):
        select_layers("attentive", {}, 3, [])
    with pytest.raises(ValueError, match="reads 1 stream"):
        build_head("superb", {}, _stream(1, 4) + [{"name": "text", "layers": [0], "dim": 4}], 2)


def test_heads_declare_what_they_read():
    """Input kind and layers come from the head classes (no name-keyed branches elsewhere)."""
    from etser import models

    HEADS = models.discover("head")

    assert {n: input_kind(n, {"algo": "mult"}) for n in HEADS} == {"superb": "pooled", "paper": "pooled", "mlp": "pooled",
                                                                   "attentive": "frames", "fusion": "frames"}
    assert input_kind("fusion", {"algo": "attention"}) == "pooled"
    assert all(c.num_streams == 1 for n, c in HEADS.items() if n != "fusion")
    assert HEADS["fusion"].num_streams is None   # two or more
    assert select_layers("superb", {}, 3) == [0, 1, 2]
    assert select_layers("attentive", {}, 13, [4, 8]) == [4, 8]
    head = build_head("mlp", {"last_layers": 2, "hidden_dims": [8]}, _stream(2, 4), 3)
    assert head.stream_name == "speech"
    x = torch.randn(5, 2, 4)
    out = head({"streams": {"speech": {"mean": x, "std": x, "present": torch.ones(5, dtype=torch.bool)}}})
    assert out.shape == (5, 3)
    with pytest.raises(ValueError, match="reads one stream"):
        head({"streams": {"text": {"mean": x, "std": x}, "visual": {"mean": x, "std": x}}})

"""emotion2vec upstreams (conf/upstream/emotion2vec_*.yaml): a tiny folder in the format users download
(tests/helpers_emotion2vec.py) loads key for key, runs through ``./run.sh --stage 2`` and gives finite
features of every layer at 50 frames/s, equal to the model built directly; a folder that does not match
its config, or weights that are not plain data, are refused naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from tests.helpers_emotion2vec import (CONV_LAYERS, EMBED, NUM_LAYERS, SPEC, funasr_shapes, random_state,
                                       tiny_emotion2vec_dir)
from tests.helpers_faults import ROOT, make_workdir, recipe_env, run_recipe

from etser.features.audio import load_audio
from etser.datadir import read_table
from etser.features.emotion2vec import parse_conv_spec
from etser.features.upstream import UpstreamError, build_upstream, load_config

CONF = ROOT / "conf" / "upstream"
VARIANTS = ("emotion2vec_base", "emotion2vec_plus_base", "emotion2vec_plus_large")


def shipped(name: str, ckpt: Path) -> dict:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    cfg["args"]["ckpt"] = str(ckpt)
    return cfg


def conv_frames(n: int) -> int:
    for _, k, s in CONV_LAYERS:
        n = (n - k) // s + 1
    return n


def test_configs_differ_only_in_checkpoint():
    cfgs = [load_config(CONF / f"{v}.yaml") for v in VARIANTS]
    for v, cfg in zip(VARIANTS, cfgs):
        assert cfg["args"].pop("ckpt") == f"downloads/models/{v}"
        assert f"huggingface.co/emotion2vec/{v} " in cfg.pop("download")
    assert cfgs[0] == cfgs[1] == cfgs[2]
    assert cfgs[0]["batch"]["policy"] == "equal_length"


def test_conv_spec_read_without_eval():
    for spec in (SPEC, "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]", "[(8, 4, 2)]"):
        assert parse_conv_spec(spec) == eval(spec)  # noqa: S307 (constants written in this test)
    with pytest.raises(ValueError, match="__import__"):
        parse_conv_spec("__import__('os').getcwd()")


@pytest.mark.parametrize("plus", [True, False])
def test_every_weight_of_the_folder_is_loaded(tmp_path, plus):
    d = tiny_emotion2vec_dir(tmp_path / "e2v", seed=1, plus=plus)
    up = build_upstream(shipped("emotion2vec_plus_base" if plus else "emotion2vec_base", d))
    own = up.model.model.state_dict()
    saved = random_state(1, plus)
    used = {k: v for k, v in saved.items() if not k.startswith(("proj.", "modality_encoders.AUDIO.decoder."))}
    assert set(own) == set(used)
    for k, v in used.items():
        assert torch.equal(own[k], v), k
    hs = up([torch.randn(16000 + 123)])
    assert len(hs) == NUM_LAYERS and hs[0].shape == (1, conv_frames(16123), EMBED)
    assert up.frame_rate == 50.0 and up.num_frames(16123) == conv_frames(16123)


def _edit(d: Path, fn) -> None:
    obj = torch.load(d / "model.pt", weights_only=True)
    fn(obj["model"])
    torch.save(obj, d / "model.pt")


class NotData:
    pass


@pytest.mark.parametrize("change, words", [
    (lambda d: _edit(d, lambda s: s.pop("blocks.1.mlp.fc2.weight")), ["model.pt", "1 weights missing",
                                                                        "blocks.1.mlp.fc2.weight"]),
    (lambda d: _edit(d, lambda s: s.update({"blocks.2.norm1.weight": torch.ones(EMBED)})),
     ["1 unknown", "blocks.2.norm1.weight"]),
    (lambda d: _edit(d, lambda s: s.update({"blocks.0.attn.qkv.bias": torch.ones(7)})),
     ["another shape", "blocks.0.attn.qkv.bias", "(7,)", "config.yaml"]),
    (lambda d: (d / "config.yaml").unlink(), ["config.yaml not found", "copy every file"]),
    (lambda d: (d / "config.yaml").write_text("model: Paraformer\nmodel_conf: {}\n"),
     ["not an emotion2vec config", "Paraformer"]),
    (lambda d: [(d / "model.pt").unlink(), (d / "configuration.json").unlink()], ["model.pt", "missing"]),
    (lambda d: torch.save({"model": random_state(0), "cfg": NotData()}, d / "model.pt"),
     ["model.pt", "refused", "read as data"]),
])
def test_a_folder_that_does_not_fit_is_refused(tmp_path, change, words):
    d = tiny_emotion2vec_dir(tmp_path / "e2v")
    change(d)
    with pytest.raises(UpstreamError) as e:
        build_upstream(shipped("emotion2vec_plus_base", d))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,                                                     # a bare state dict
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},   # DDP-saved, under state_dict
    lambda sd: {"model": {f"d2v_model.{k}": v for k, v in sd.items()}},     # a fairseq fine-tuning wrapper
])
def test_the_layouts_funasr_loads_are_read(tmp_path, wrap):
    d = tiny_emotion2vec_dir(tmp_path / "e2v", seed=4)
    torch.save(wrap(random_state(4)), d / "model.pt")
    up = build_upstream(shipped("emotion2vec_plus_base", d))
    key = "modality_encoders.AUDIO.context_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(up.model.model.state_dict()[key], random_state(4)[key])


def test_old_alibi_scale_layout_loads(tmp_path):
    """A 4-d alibi_scale (older data2vec 2.0 checkpoints) is read as fairseq's upgrade does."""
    d = tiny_emotion2vec_dir(tmp_path / "e2v")
    _edit(d, lambda s: s.update({"modality_encoders.AUDIO.alibi_scale": s["modality_encoders.AUDIO.alibi_scale"][0]}))
    up = build_upstream(shipped("emotion2vec_plus_base", d))
    assert up.model.model.audio.alibi_scale.shape == funasr_shapes()["modality_encoders.AUDIO.alibi_scale"]


def _workdir(path: Path, ckpt: Path) -> Path:
    """A working dir with the shipped configs; the folder where emotion2vec_plus_base.yaml's 'ckpt' says."""
    make_workdir(path)
    shutil.copytree(ckpt, path / "downloads" / "models" / "emotion2vec_plus_base")
    return path


def test_tiny_folder_runs_through_stage_2(tmp_path, small_release):
    w = _workdir(tmp_path / "work", tiny_emotion2vec_dir(tmp_path / "e2v", seed=2))
    common = ("--upstreams", "emotion2vec_plus_base", "--tasks", "speech_four", "--nj", "2")
    r = run_recipe(w, "--db_root", small_release, "--stop_stage", "1", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_recipe(w, "--stage", "2", "--stop_stage", "2", *common, env=recipe_env())
    assert r.returncode == 0, r.stderr[-3000:]
    (tag_dir,) = (w / "dump").iterdir()
    assert tag_dir.name.startswith("emotion2vec_plus_base_")
    up = build_upstream(shipped("emotion2vec_plus_base", w / "downloads" / "models" / "emotion2vec_plus_base"))
    for s in ("train", "val", "test"):
        meta = json.loads((tag_dir / s / "meta.json").read_text())
        assert (meta["num_layers"], meta["dim"], meta["frame_rate"]) == (NUM_LAYERS, EMBED, 50.0)
        wav = read_table(w / "data" / s / "wav.scp")
        n2f = read_table(tag_dir / s / "utt2num_frames")
        means = dict(kaldiio.load_scp_sequential(str(tag_dir / s / "pooled_mean.scp")))
        stds = dict(kaldiio.load_scp_sequential(str(tag_dir / s / "pooled_std.scp")))
        assert sorted(means) == sorted(wav)
        assert all(np.isfinite(m).all() and m.shape == (NUM_LAYERS, EMBED) for m in means.values())
        for utt in sorted(wav)[:3]:  # the model built directly, on the recipe's audio
            x = load_audio(wav[utt])
            with torch.inference_mode():
                hs = up.model.model.hidden_states(torch.from_numpy(x)[None])
            ref = torch.stack([h[0] for h in hs]).double()   # (L, T, D)
            assert int(n2f[utt]) == ref.shape[1] == conv_frames(len(x))
            np.testing.assert_allclose(means[utt], ref.mean(1).numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(stds[utt], ref.std(1, unbiased=False).numpy(), rtol=1e-4, atol=1e-5)

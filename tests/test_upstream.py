"""etser.upstream: configs, tags, the factory routes (S3PRL name, local checkpoint, HF dir, plug-in), fail-fast
checks for missing checkpoints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from etser.features.upstream import (UpstreamError, available_names, build_upstream, config_hash, config_tag, load_config,
                            normalize_config)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "upstream"
TEST_CONF = ROOT / "tests" / "conf" / "upstream"
SHIPPED = ("fbank", "mfcc", "mel", "spectrogram", "fbank_no_cmvn", "hubert_base", "hubert_large", "wav2vec2_base",
           "wav2vec2_large", "wavlm_base", "wavlm_large", "whisper_base", "whisper_large", "whisper_base_encoder",
           "whisper_large_encoder")


def test_shipped_configs_load():
    assert set(SHIPPED) <= set(available_names(CONF))
    for name in available_names(CONF):
        cfg = load_config(name, CONF)
        if cfg["ckpt"] or cfg["args"].get("ckpt"):
            assert cfg["download"], f"{name}: a checkpoint config must say where to download it"


def test_hash_covers_what_decides_the_features():
    base = normalize_config({"name": "fbank"})
    assert config_hash(base) == config_hash(normalize_config({"name": "fbank", "args": {}}))
    # Hints and resources are not part of it ...
    assert config_hash(base) == config_hash(normalize_config({"name": "fbank", "download": "x",
                                                              "batch": {"max_items": 3}}))
    # ... the model, its arguments, chunking and frame output are.
    for change in ({"name": "mfcc"}, {"args": {"a": 1}}, {"chunk": {"seconds": 10}},
                   {"frames": {"layers": "all"}}, {"autocast": "bf16"}):
        assert config_hash(base) != config_hash(normalize_config({"name": "fbank", **change})), change
    # Key order in the file does not matter.
    assert config_hash(normalize_config({"chunk": {"overlap": 2, "seconds": 9}, "name": "fbank"})) == \
        config_hash(normalize_config({"name": "fbank", "chunk": {"seconds": 9, "overlap": 2}}))


@pytest.mark.parametrize("bad, words", [
    ({"name": "fbank", "chunks": {}}, ["unknown key 'chunks'", "did you mean 'chunk'"]),
    ({}, ["exactly one of 'name'"]),
    ({"name": "fbank", "factory": "m:f"}, ["exactly one of 'name'"]),
    ({"name": "fbank", "batch": {"policy": "bucket"}}, ["batch.policy"]),
    ({"name": "fbank", "frames": {"layers": 3}}, ["frames.layers"]),
    ({"name": "fbank", "chunk": {"seconds": 4, "overlap": 3}}, ["chunk.overlap"]),
    ({"name": "fbank", "chunk": {"seconds": "30s"}}, ["conf/upstream/x.yaml", "chunk.seconds", "'30s'"]),
    ({"name": "fbank", "batch": {"max_items": None}}, ["conf/upstream/x.yaml", "batch.max_items", "None"]),
])
def test_bad_configs_are_refused(bad, words):
    with pytest.raises(UpstreamError) as err:
        normalize_config(bad, "conf/upstream/x.yaml")
    for w in words:
        assert w in str(err.value)


def test_tag_cli_by_path_and_name():
    expected = f"fbank_{config_hash(load_config(CONF / 'fbank.yaml'))}"
    for arg in ("conf/upstream/fbank.yaml", "fbank"):
        out = subprocess.run([sys.executable, "-m", "etser.features.upstream", "tag", arg], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == expected and re.fullmatch(r"fbank_[0-9a-f]{8}", out)
    assert config_tag("fbank", CONF) == expected


def test_unknown_upstream_lists_the_available_names():
    res = subprocess.run([sys.executable, "-m", "etser.features.upstream", "tag", "hubert_bsae"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "unknown upstream 'hubert_bsae'" in res.stderr
    for name in ("fbank", "hubert_base", "whisper_large"):
        assert name in res.stderr


@pytest.mark.parametrize("name, words", [
    ("hubert_base", ["chinese-hubert-base", "huggingface.co/TencentGameMate/chinese-hubert-base"]),
    ("wav2vec2_large", ["chinese-wav2vec2-large"]),
    ("wavlm_base", ["wavlm_base.pt", "converted_ckpts"]),
    ("whisper_base", ["whisper-base", "huggingface.co/openai/whisper-base"]),
])
def test_missing_checkpoint_fails_fast_saying_what_and_where(tmp_path, monkeypatch, name, words):
    monkeypatch.chdir(tmp_path)  # no downloads/ here
    t0 = time.time()
    with pytest.raises(UpstreamError) as err:
        build_upstream(load_config(CONF / f"{name}.yaml"))
    assert time.time() - t0 < 5
    msg = str(err.value)
    assert str(tmp_path / "downloads" / "models") in msg and "Download" in msg
    for w in words:
        assert w in msg


def test_hf_dir_without_preprocessor_config_is_refused(tmp_path):
    from helpers_models import tiny_hf_dir

    d = tiny_hf_dir(tmp_path / "hf", "hubert", "group")
    (d / "preprocessor_config.json").unlink()
    with pytest.raises(UpstreamError, match="lacks preprocessor_config.json"):
        build_upstream({"name": "hf_hubert_custom", "ckpt": str(d)})


def test_s3prl_url_entry_without_cache_fails_without_network(tmp_path):
    import s3prl.util.download as dl

    old = dl.get_dir()
    dl.set_dir(tmp_path / "s3prl_cache")
    try:
        with pytest.raises(UpstreamError) as err:
            build_upstream({"name": "wavlm_base_plus"})
    finally:
        dl.set_dir(old)
    msg = str(err.value)
    assert "https://" in msg and str(tmp_path / "s3prl_cache") in msg and "wavlm_local" in msg


def test_unknown_s3prl_entry():
    with pytest.raises(UpstreamError, match="not an S3PRL hub entry.*hubert_local"):
        build_upstream({"name": "hubert_locale", "ckpt": "x"})


def test_local_checkpoint_routes(tmp_path):
    """hubert_local / wav2vec2_local / wavlm_local checkpoints and HF dirs: layers, width, frame rate."""
    from helpers_models import tiny_hf_dir, tiny_hubert_ckpt, tiny_wav2vec2_ckpt, tiny_wavlm_ckpt

    cases = [("hubert_local", tiny_hubert_ckpt(tmp_path / "h.pt")),
             ("wav2vec2_local", tiny_wav2vec2_ckpt(tmp_path / "w.pt")),
             ("wavlm_local", tiny_wavlm_ckpt(tmp_path / "l.pt")),
             ("hf_hubert_custom", tiny_hf_dir(tmp_path / "hfh", "hubert")),
             ("hf_wav2vec2_custom", tiny_hf_dir(tmp_path / "hfw", "wav2vec2"))]
    for entry, ckpt in cases:
        up = build_upstream({"name": entry, "ckpt": str(ckpt)})
        hs = up([torch.zeros(16000)])
        assert up.stride == 320 and up.frame_rate == 50
        assert len(hs) == 3 and hs[0].shape == (1, 49, 32), entry
        assert up.num_frames(16000) == 49


def test_whisper_route(tmp_path):
    from helpers_models import tiny_whisper_dir

    d = tiny_whisper_dir(tmp_path / "whisper")
    cfg = yaml.safe_load((CONF / "whisper_base_encoder.yaml").read_text())
    cfg["args"]["ckpt"] = str(d)
    up = build_upstream(cfg)  # policy padded: build checks batching is exact
    hs = up([torch.zeros(16000), torch.zeros(8000)])
    assert len(hs) == 3 and hs[0].shape == (2, 50, 32) and up.stride == 320
    cfg["chunk"]["seconds"] = 40
    with pytest.raises(UpstreamError, match="exceeds this model's longest input"):
        build_upstream(cfg)


def test_whisper_bf16_autocast_on_cpu(tmp_path):
    """CPU bf16 autocast must not reach Whisper's feature extractor (its .numpy() refuses bf16 log-mels)."""
    from helpers_models import tiny_whisper_dir

    cfg = yaml.safe_load((CONF / "whisper_base_encoder.yaml").read_text())
    cfg["args"]["ckpt"] = str(tiny_whisper_dir(tmp_path / "whisper"))
    wav = torch.randn(12000, generator=torch.Generator().manual_seed(0)) * 0.1
    ref = build_upstream(cfg)([wav])
    cfg["autocast"] = "bf16"
    got = build_upstream(cfg)([wav])
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert torch.linalg.norm(g.float() - r) <= 5e-2 * torch.linalg.norm(r)


def test_plugin_factory_from_a_file_outside_the_package(tmp_path, monkeypatch):
    """(d): a YAML naming file.py:function; also module:function once the file is importable."""
    (tmp_path / "conf" / "upstream").mkdir(parents=True)
    for f in ("tiny_plugin.py", "tiny_plugin.yaml"):
        shutil.copy(TEST_CONF / f, tmp_path / "conf" / "upstream" / f)
    monkeypatch.chdir(tmp_path)
    up = build_upstream(load_config("tiny_plugin", "conf/upstream"))
    hs = up([torch.zeros(16000)])
    assert len(hs) == 3 and hs[0].shape == (1, 49, 8) and up.stride == 320
    monkeypatch.syspath_prepend(str(tmp_path / "conf" / "upstream"))
    up2 = build_upstream({"factory": "tiny_plugin:build", "args": {"dim": 4, "layers": 2}})
    assert len(up2([torch.zeros(16000)])) == 2
    with pytest.raises(UpstreamError, match="cannot import"):
        build_upstream({"factory": "no_such_module_xyz:build"})
    with pytest.raises(UpstreamError, match="no function 'nope'"):
        build_upstream({"factory": "tiny_plugin:nope"})


def test_plugin_without_frame_rate_is_probed(tmp_path):
    """A plug-in that declares nothing: the frame rate is measured; padded batches are refused."""
    (tmp_path / "bare.py").write_text(
        "import torch\n"
        "def build():\n"
        "    def f(wavs):\n"
        "        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)\n"
        "        return {'hidden_states': [x[:, : x.shape[1] // 160 * 160].reshape(len(wavs), -1, 160)]}\n"
        "    return f\n")
    up = build_upstream({"factory": f"{tmp_path}/bare.py:build"})
    assert up.stride == 160
    with pytest.raises(UpstreamError, match="num_frames"):
        build_upstream({"factory": f"{tmp_path}/bare.py:build", "batch": {"policy": "padded"}})


def test_padded_policy_is_refused_where_padding_changes_features(tmp_path):
    """The GroupNorm feature encoder of Base models (fairseq #3227): 'padded' must not be accepted."""
    from helpers_models import tiny_hf_dir

    d = tiny_hf_dir(tmp_path / "hf", "hubert", "group")
    with pytest.raises(UpstreamError, match="batch policy 'padded' changes this model's features"):
        build_upstream({"name": "hf_hubert_custom", "ckpt": str(d), "batch": {"policy": "padded"}})

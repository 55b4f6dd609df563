"""The remote-code text checkpoints (Baichuan-7B, ChatGLM2-6B) through stage 2, on test doubles that
reproduce what breaks them on the pinned stack (tests/helpers_remote_lm.py), and the guard that keeps
non-finite features out of every dump."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from etser.datadir import read_table
from etser.features.extract import main as extract_main, run_job
from helpers_remote_lm import direct_features, tiny_baichuan, tiny_chatglm2

pytest.importorskip("sentencepiece")

TEXTS = {"u1": "今天下午我们开会", "u2": "开心", "u3": "难过", "u4": "我们一个人去看电影呢啊", "u5": "真的是吗"}
PREFIX = {"baichuan": 1, "chatglm2": 2}  # BOS; [gMASK] sop


def _data(root: Path, texts: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "text_raw").write_text("".join(f"{u} {t}\n" for u, t in sorted(texts.items())), encoding="utf-8")
    return root


def _conf(path: Path, ckpt: Path, **extra) -> Path:
    """The shipped config with the checkpoint moved to the double (float32: the CPU runs it)."""
    kind = "text_baichuan_7b" if "baichuan" in ckpt.name else "text_chatglm2_6b"
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/upstream" / f"{kind}.yaml").read_text())
    cfg.update(ckpt=str(ckpt), dtype="float32", **extra)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _stage2(conf: Path, data: Path, out: Path) -> dict:
    """What the recipe's stage 2 runs: ``python -m etser.features.extract job`` then ``merge``."""
    args = ["--config", str(conf), "--data", str(data), "--dir", str(out)]
    assert extract_main(["job", *args]) == 0
    assert extract_main(["merge", *args]) == 0
    return json.loads((out / "meta.json").read_text())


def _mats(out: Path) -> dict[str, np.ndarray]:
    return {u: np.asarray(kaldiio.load_mat(v)) for u, v in read_table(out / "pooled_mean.scp").items()}


@pytest.fixture(scope="module", params=["baichuan", "chatglm2"])
def remote_ckpt(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    build = tiny_baichuan if request.param == "baichuan" else tiny_chatglm2
    return request.param, build(root / f"tiny_{request.param}")


def test_remote_checkpoint_gives_the_directly_built_models_features(remote_ckpt, tmp_path):
    kind, ckpt = remote_ckpt
    meta = _stage2(_conf(tmp_path / "c.yaml", ckpt), _data(tmp_path / "data", TEXTS), tmp_path / "dump")
    fixes = " ".join(meta["encoder"].get("load_fixes", []))
    # what was needed, recorded with the features
    assert "the parent constructor run after the tokenizer's own" in fixes
    if kind == "baichuan":
        assert "rotary tables" in fixes
    else:
        assert "_pad: padding_side accepted" in fixes and "config.max_length = 20" in fixes
        assert "post_init() called after its constructor" in fixes
    mats = _mats(tmp_path / "dump")
    assert set(mats) == set(TEXTS)
    for utt, text in TEXTS.items():
        assert np.isfinite(mats[utt]).all()
        np.testing.assert_allclose(mats[utt], direct_features(ckpt, kind, text), rtol=1e-4, atol=1e-5,
                                   err_msg=f"{kind} {utt}")
    # two different two-character transcripts: different features (ChatGLM2 once pooled only its prefix)
    assert np.abs(mats["u2"] - mats["u3"]).max() > 1e-3
    # the time axis holds the transcript's own tokens: no prefix, none dropped
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    nf = {u: int(v) for u, v in read_table(tmp_path / "dump" / "utt2num_frames").items()}
    assert nf == {u: len(sp.encode(t)) for u, t in TEXTS.items()}


def test_batch_as_large_as_the_padded_length_equals_one_at_a_time(remote_ckpt, tmp_path):
    """ChatGLM2's (T, B, D) layout read by model type: a batch of B = T sequences cannot be told by shape."""
    import sentencepiece as spm

    kind, ckpt = remote_ckpt
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    longest = TEXTS["u4"]
    padded = PREFIX[kind] + len(sp.encode(longest))
    shorter = ["开心", "难过", "很开心", "真的是吗", "哭", "生气", "讨厌", "高兴", "失望", "烦", "看电影", "吃饭",
               "下午", "我们", "一个人", "太好了"]
    texts = {"b00": longest, **{f"b{i:02d}": t for i, t in enumerate(shorter[:padded - 1], 1)}}
    assert len(texts) == padded and max(PREFIX[kind] + len(sp.encode(t)) for t in texts.values()) == padded
    data = _data(tmp_path / "data", texts)
    _stage2(_conf(tmp_path / "all.yaml", ckpt, batch={"max_items": padded, "max_tokens": 100000}), data,
            tmp_path / "all")
    _stage2(_conf(tmp_path / "one.yaml", ckpt, batch={"max_items": 1, "max_tokens": 100000}), data,
            tmp_path / "one")
    together, alone = _mats(tmp_path / "all"), _mats(tmp_path / "one")
    for utt in texts:
        np.testing.assert_allclose(together[utt], alone[utt], rtol=1e-4, atol=1e-5, err_msg=utt)


NAN_ENCODER = '''
import torch


class NanForOne:
    """Finite features except for transcripts containing the character 坏."""

    info = {}

    def prepare(self, text):
        return text

    def size(self, item):
        return len(item)

    def encode(self, items):
        out = []
        for t in items:
            x = torch.ones(2, len(t), 3)
            if "坏" in t:
                x[1, 0, 2] = float("nan")
            out.append(x)
        return out


def build():
    return NanForOne()
'''


def test_a_non_finite_feature_stops_the_job_naming_utterance_and_upstream(tmp_path, capsys):
    (tmp_path / "nan_text.py").write_text(NAN_ENCODER)
    conf = tmp_path / "text_nan.yaml"
    conf.write_text(yaml.safe_dump({"modality": "text", "factory": f"{tmp_path}/nan_text.py:build"}))
    data = _data(tmp_path / "data", {"a1": "很开心", "a2": "坏了", "a3": "难过"})
    out = tmp_path / "dump"
    args = ["--config", str(conf), "--data", str(data), "--dir", str(out)]
    assert extract_main(["job", *args]) == 1
    err = capsys.readouterr().err
    assert f"upstream {conf}" in err and "utterance a2" in err and "NaN or infinite" in err
    # nothing of the job was published: no marker, no tables, no ark, and merge refuses
    assert not list(out.rglob("done.*")) and not list(out.rglob("*.scp")) and not list(out.rglob("*.ark"))
    assert extract_main(["merge", *args]) == 1
    # the same through the library call
    with pytest.raises(ValueError, match="utterance a2: 1 of 6 feature values are NaN"):
        run_job(str(conf), data, tmp_path / "dump2")


def test_float16_frames_that_overflow_are_refused(tmp_path):
    from etser.features.dumpio import NonFiniteFeatures, write_matrix

    with open(tmp_path / "x.ark", "wb") as fd:
        write_matrix(fd, "ok", np.full((2, 2), 6e4, dtype=np.float32), "float16")
        with pytest.raises(NonFiniteFeatures, match="utterance big: 4 of 4"):
            write_matrix(fd, "big", np.full((2, 2), 7e4, dtype=np.float32), "float16")


def test_recipe_stage2_on_both_remote_checkpoints(tmp_path, monkeypatch):
    """``./run.sh --stage 2 --upstreams "<baichuan> <chatglm2>"`` as a user runs it, the shipped configs
    pointed at the doubles: finite features equal to the directly built models'."""
    from helpers_faults import ROOT, recipe_env, run_recipe

    work = tmp_path / "work"
    work.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "utils"):
        (work / name).symlink_to(ROOT / name)
    (work / "conf" / "upstream").mkdir(parents=True)
    for p in (ROOT / "conf").iterdir():
        if p.name != "upstream":
            (work / "conf" / p.name).symlink_to(p)
    confs = []
    for kind, build in (("baichuan", tiny_baichuan), ("chatglm2", tiny_chatglm2)):
        ckpt = build(work / "downloads" / f"tiny_{kind}")
        confs.append((kind, ckpt, _conf(work / "conf" / "upstream" / f"tiny_{kind}.yaml", ckpt)))
    texts = {"train": {"t1": "今天下午我们开会", "t2": "开心", "t3": "难过"}, "val": {"v1": "真的是吗", "v2": "哭"}}
    for s, t in texts.items():
        _data(work / "data" / s, t)
    env = recipe_env(ETSER_PYTHON_ENV="system",  # this interpreter, as the unit tests run
                     PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    res = run_recipe(work, "--stage", "2", "--stop_stage", "2", "--upstreams", "tiny_baichuan tiny_chatglm2",
                     "--sets", "train val", "--nj", "1", "--fusion", "", "--caption_decoders", "",
                     "--python", sys.executable, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    monkeypatch.chdir(work)  # the scp tables hold paths relative to the working directory
    for kind, ckpt, conf in confs:
        (dump,) = (work / "dump").glob(f"tiny_{kind}_*")
        for s, t in texts.items():
            mats = _mats(dump / s)
            assert set(mats) == set(t)
            for utt, text in t.items():
                np.testing.assert_allclose(mats[utt], direct_features(ckpt, kind, text), rtol=1e-4, atol=1e-5,
                                           err_msg=f"{kind} {utt}")

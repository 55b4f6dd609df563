"""Inference on new audio rebuilds the upstream from the exp dir and reproduces stage 4's probabilities."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etser.learn import score, train
from etser.features import extract
from etser.learn import infer
from etser.datadir import write_table

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("neutral", "happy", "sad", "angry")


def _tone(rng, label: int, seconds: float, rate: int) -> np.ndarray:
    """A harmonic tone whose pitch and loudness depend on the class: learnable from fbank statistics."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = (110, 220, 90, 300)[label] * (1 + 0.05 * rng.standard_normal())
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return ((0.05 + 0.1 * label) * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Wavs -> data dirs -> stage-2 features (pooled + frames) with the shipped fbank_no_cmvn config."""
    root = tmp_path_factory.mktemp("infer")
    rng = np.random.default_rng(0)
    cfg = root / "fbank_no_cmvn_frames.yaml"
    cfg.write_text((ROOT / "conf/upstream/fbank_no_cmvn.yaml").read_text()
                   + "frames:\n  layers: all\n  dtype: float32\n")
    tag = "fbank_no_cmvn_frames_test"
    for set_name, n in (("train", 24), ("val", 8), ("test", 8)):
        d = root / "data" / set_name
        d.mkdir(parents=True)
        wav, emo = {}, {}
        for i in range(n):
            utt = f"S{i % 3 + 1:02d}-{set_name}{i:03d}"
            rate = 44100 if i % 2 else 16000   # the resampling path is part of what must match
            path = root / "wav" / f"{utt}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, _tone(rng, i % 4, 0.6 + 0.1 * (i % 5), rate), rate)
            wav[utt], emo[utt] = str(path), CLASSES[i % 4]
        write_table(d / "wav.scp", wav)
        write_table(d / "utt2emo_audio", emo)
        out = root / "dump" / tag / set_name
        extract.run_job(cfg, d, out, nj=1, job=1)
        extract.merge(cfg, d, out, nj=1, name="fbank_no_cmvn_frames")
    return root, root / "data", root / "dump" / tag


@pytest.mark.parametrize("head,conf", [("superb", ["optim_conf.lr=0.01", "max_epochs=5"]),
                                       ("attentive", ["max_epochs=2", "head_conf.hidden_dim=32"])])
def test_infer_matches_stage4_predictions(pipeline, head, conf, capsys):
    root, data_dir, feats_dir = pipeline
    exp = root / "exp" / head
    argv = ["--config", str(ROOT / f"conf/train/{head}.yaml"), "--task", "speech_four", "--data_dir", str(data_dir),
            "--feats_dir", str(feats_dir), "--exp_dir", str(exp)]
    for c in conf:
        argv += ["--conf", c]
    assert train.main(argv) == 0
    assert (exp / "upstream.yaml").is_file()
    score.score_exp(exp, ["test"])
    utts, _, preds, probs, classes = score.read_predictions(exp / "decode_test" / "predictions.txt")
    wav_scp = data_dir / "test" / "wav.scp"
    assert infer.main(["--exp", str(exp), "--wav_scp", str(wav_scp), "--output", str(root / f"{head}.txt")]) == 0
    lines = (root / f"{head}.txt").read_text().splitlines()
    assert lines[0].split("\t") == ["id", "pred", *(f"p_{c}" for c in classes), "note"]
    got = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert sorted(got) == sorted(utts)
    for u, pred, p in zip(utts, preds, probs):
        assert got[u][1] == pred
        assert np.allclose([float(x) for x in got[u][2:-1]], p, atol=1e-4)
    # plain wav paths work too and give the same probabilities
    first_wav = (data_dir / "test" / "wav.scp").read_text().split()[1]
    rows, failed = infer.predict(infer.load_model(exp), [infer.Input(first_wav, first_wav)])
    assert not failed and np.allclose([float(x) for x in rows[0][1:-1]], probs[0], atol=1e-4)


def test_infer_errors(pipeline, tmp_path, capsys):
    root, data_dir, feats_dir = pipeline
    exp = root / "exp" / "errors"
    assert train.main(["--config", str(ROOT / "conf/train/superb.yaml"), "--task", "speech_four", "--data_dir",
                       str(data_dir), "--feats_dir", str(feats_dir), "--exp_dir", str(exp),
                       "--conf", "max_epochs=1"]) == 0
    from etser.learn.checkpoint import atomic_save, read_checkpoint

    broken = tmp_path / "exp"
    shutil.copytree(exp, broken)
    # an edited copy of the config: refused, named, before any input is read
    cfg = broken / "upstream.yaml"
    cfg.write_text(cfg.read_text().replace("seconds: 600", "seconds: 500"))
    assert infer.main(["--exp", str(broken), str(tmp_path / "x.wav")]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}: config hash" in err and "differs from the training features'" in err
    # no copy and no dump to take it from: refused, naming where it was looked for
    cfg.unlink()
    best = read_checkpoint(broken / "best.pt")
    best["info"]["streams"][0]["feats_dir"] = str(tmp_path / "gone")
    atomic_save(best, broken / "best.pt")
    assert infer.main(["--exp", str(broken), str(tmp_path / "x.wav")]) == 1
    err = capsys.readouterr().err
    assert "the upstream config of its training features is missing" in err and str(cfg) in err
    assert infer.main(["--exp", str(exp), str(tmp_path / "missing.wav")]) == 1
    assert "missing.wav" in capsys.readouterr().err


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.rstrip("\n").splitlines()
    assert lines[0].startswith("id\tpred\t") and lines[0].endswith("\tnote")
    return {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}


def test_infer_many_files_one_unreadable_spaces_folder_and_silence(pipeline, tmp_path, capsys):
    """One bad file keeps the others' lines; a path with spaces stays one field; a folder means its audio files;
    silence gets a warning beside its prediction."""
    root, data_dir, feats_dir = pipeline
    exp = root / "exp" / "many"
    assert train.main(["--config", str(ROOT / "conf/train/superb.yaml"), "--task", "speech_four", "--data_dir",
                       str(data_dir), "--feats_dir", str(feats_dir), "--exp_dir", str(exp),
                       "--conf", "max_epochs=1"]) == 0
    folder = tmp_path / "my recordings"
    folder.mkdir()
    good = sorted((root / "wav").glob("*.wav"))[:2]
    spaced = folder / "take one.wav"
    shutil.copy(good[0], spaced)
    shutil.copy(good[1], folder / "b.flac.wav")
    (folder / "notes.txt").write_text("not audio")
    broken = tmp_path / "broken file.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, (1e-5 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    rc = infer.main(["--exp", str(exp), str(broken), str(folder), str(silent), str(quiet), str(good[0])])
    out, err = capsys.readouterr()
    assert rc == 1  # something was unreadable, and the exit status says so
    rows = _rows(out)
    assert list(rows) == [str(broken), str(folder / "b.flac.wav"), str(spaced), str(silent), str(quiet),
                          str(good[0])]
    assert rows[str(broken)][1] == "-" and "unreadable" in rows[str(broken)][-1]
    assert all(x == "nan" for x in rows[str(broken)][2:-1])
    for f in (spaced, good[0]):
        assert rows[str(f)][1] in CLASSES and rows[str(f)][-1] == ""
    assert rows[str(spaced)][2:-1] == rows[str(good[0])][2:-1]  # the same audio, the same probabilities
    assert rows[str(silent)][1] in CLASSES and "silent input" in rows[str(silent)][-1]
    assert "near-silent input (RMS -9" in rows[str(quiet)][-1] and "dBFS < -60" in rows[str(quiet)][-1]
    assert f"{broken}: unreadable" in err and "1 not predicted" in err


def test_infer_empty_folder_is_named(pipeline, tmp_path, capsys):
    root, _, _ = pipeline
    (tmp_path / "empty").mkdir()
    exp = next((root / "exp").iterdir())
    assert infer.main(["--exp", str(exp), str(tmp_path / "empty")]) == 1
    assert "a folder without audio or video files" in capsys.readouterr().err


def test_superb_pooled_equals_frame_level_on_a_stage2_dump(pipeline):
    """The exactness claim on what etser.features.extract really writes (pooled stats and float32 frames of all layers)."""
    import torch

    from etser.models.heads.superb import SuperbHead

    _, data_dir, feats_dir = pipeline
    from etser.featset import Stream
    from etser.tasks import get_task

    task = get_task("speech_all")
    pooled = train.load_split(task, data_dir, "train", [Stream("speech", feats_dir, (0,), "pooled")])
    frames = train.load_split(task, data_dir, "train", [Stream("speech", feats_dir, (0,), "frames")])
    assert pooled.utts == frames.utts
    idx = list(range(len(frames)))
    p, f = pooled.batch(idx)["streams"]["speech"], frames.batch(idx)["streams"]["speech"]
    torch.manual_seed(0)
    head = SuperbHead(1, p["mean"].shape[-1], 7, stats=("mean", "std"), normalize=True)
    head.fit_normalizer(p["mean"], p["std"])
    head.eval()
    a = head.forward_stream(p)
    b = head.forward_frames(f["frames"], f["lengths"])
    assert (a - b).abs().max().item() <= 1e-5

"""Inference with every kind of trained model on new files of the mini corpus: a fusion model on mp4 files plus
transcripts, a captioner on wavs, text-only and visual-only heads, an unreadable file among good ones.

The exp dirs are trained (few epochs) on stage-2 features of the quarter-size mini corpus made with the
shipped configs (fbank_no_cmvn, text_baseline, visual_baseline), in a working dir laid out as the recipe's
(``data/``, ``dump/``), from which inference runs as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from etser.features import extract
from etser.datadir import read_table
from etser.learn import infer

ROOT = Path(__file__).resolve().parents[1]
UPSTREAMS = ("fbank_no_cmvn", "text_baseline", "visual_baseline")
FOUR = ("neutral", "happy", "sad", "angry")


@pytest.fixture(scope="module")
def workdir(small_release, tmp_path_factory):
    """data/{train,val} (stage 1), dump/<upstream>/{train,val} (stage 2), and trained exp dirs."""
    from etser.caption.config import load_config as caption_config
    from etser.caption.train import train as train_caption
    from etser.learn.train import load_config, train

    w = tmp_path_factory.mktemp("infer_mm")
    subprocess.run([sys.executable, str(ROOT / "local/data_prep.py"), "--db_root", str(small_release), "--out",
                    str(w / "data"), "--sets", "train", "val"], check=True, capture_output=True)
    cwd = Path.cwd()
    os.chdir(w)  # the text baseline fits on data/train/text, relative to the working dir as in stage 2
    try:
        for up in UPSTREAMS:
            for s in ("train", "val"):
                cfg = ROOT / f"conf/upstream/{up}.yaml"
                extract.run_job(cfg, Path("data") / s, Path("dump") / up / s)
                extract.merge(cfg, Path("data") / s, Path("dump") / up / s, 1)
        exp = {}
        fusion = load_config(ROOT / "conf/train/fusion.yaml", ["max_epochs=2", "allow_missing=true"])
        exp["fusion"] = Path("exp/fusion/multi_four")
        train(fusion, "multi_four", Path("data"), None, exp["fusion"], 1,
              fusion_streams={"speech": Path("dump/fbank_no_cmvn"), "text": Path("dump/text_baseline"),
                              "visual": Path("dump/visual_baseline")})
        strict = load_config(ROOT / "conf/train/fusion.yaml", ["max_epochs=1"])
        exp["strict"] = Path("exp/fusion_strict/multi_four")
        train(strict, "multi_four", Path("data"), None, exp["strict"], 1,
              fusion_streams={"speech": Path("dump/fbank_no_cmvn"), "text": Path("dump/text_baseline")})
        superb = load_config(ROOT / "conf/train/superb.yaml", ["max_epochs=3"])
        for name, task, up in (("text", "text_four", "text_baseline"), ("visual", "video_four", "visual_baseline"),
                               ("speech", "speech_four", "fbank_no_cmvn")):
            exp[name] = Path(f"exp/{up}/superb/{task}")
            train(superb, task, Path("data"), Path("dump") / up, exp[name], 1)
        cap = caption_config(ROOT / "conf/caption/transformer.yaml",
                             ["max_epochs=8", "average_last=4", "keep_checkpoints=4", "select_metric=val_loss",
                              "decode_conf.num_beams=1", "decode_conf.max_len=8"])
        exp["caption"] = Path("exp/caption/fbank_no_cmvn/transformer/style")
        train_caption(cap, "style", Path("data"), Path("dump/fbank_no_cmvn"), exp["caption"], 1,
                      command="python -m etser.caption.train --feats_dir dump/fbank_no_cmvn --kind style")
    finally:
        os.chdir(cwd)
    return w, exp


@pytest.fixture
def new_files(small_release, workdir, tmp_path, monkeypatch):
    """Two test-set mp4s and wavs (never trained on) under new names, their transcripts, and cwd = workdir."""
    w, exp = workdir
    monkeypatch.chdir(w)
    mp4s = sorted(small_release.glob("Multimodal/Multimodal/mp4/G00003/**/*.mp4"))[:2]
    wavs = sorted(small_release.glob("Audio/Audio/wav/G00003/**/*.wav"))[:2]
    assert len(mp4s) == 2 and len(wavs) == 2
    new = tmp_path / "new clips"
    new.mkdir()
    out = {"mp4": [], "wav": []}
    for i, (m, a) in enumerate(zip(mp4s, wavs)):
        out["mp4"].append(shutil.copy(m, new / f"clip {i}.mp4"))
        out["wav"].append(shutil.copy(a, new / f"voice{i}.wav"))
    # transcripts keyed by file name without extension, tab-separated (a key with a space)
    texts = ["今天真的太开心了，我们赢了", "我有点难过，他没有来"]
    (tmp_path / "clips.tsv").write_text("".join(f"clip {i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    return exp, new, out, tmp_path / "clips.tsv"


def _rows(out: str, header: list[str]) -> dict[str, list[str]]:
    lines = out.rstrip("\n").splitlines()
    assert lines[0].split("\t") == header
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert all(len(r) == len(header) for r in rows.values())
    return rows


def _probs_ok(row: list[str]) -> None:
    p = np.array([float(x) for x in row[2:-1]])
    assert row[1] in FOUR and np.isfinite(p).all() and abs(p.sum() - 1) < 1e-3 and row[1] == FOUR[int(p.argmax())]


HEADER = ["id", "pred", *(f"p_{c}" for c in FOUR), "note"]


def test_fusion_on_new_mp4_files_and_transcripts(new_files, capsys):
    exp, folder, files, text = new_files
    assert infer.main(["--exp", str(exp["fusion"]), str(folder / "clip 0.mp4"), str(folder / "clip 1.mp4"),
                       "--text", str(text)]) == 0
    rows = _rows(capsys.readouterr().out, HEADER)
    assert list(rows) == [str(f) for f in files["mp4"]]
    for r in rows.values():
        _probs_ok(r)
        assert r[-1] == ""  # every modality present: no warning
    # the transcript is read: without it (allow_missing) the text stream is missing, said in the note
    assert infer.main(["--exp", str(exp["fusion"]), str(folder / "clip 0.mp4")]) == 0
    row = _rows(capsys.readouterr().out, HEADER)[str(files["mp4"][0])]
    _probs_ok(row)
    assert row[-1] == "warning: text missing (no transcript): predicted without it"


def test_streams_match_the_training_features(new_files, workdir):
    """The features inference computes for a training utterance equal the ones stage 2 dumped for it: pooled
    (the fusion model's speech, text and visual streams) and frames (the captioner's, float16 in the dump)."""
    import kaldiio

    w, exp = workdir
    streams = infer.load_model(exp["fusion"]).streams + infer.load_model(exp["caption"]).streams
    assert {st["kind"] for st in streams} == {"pooled", "frames"}
    video = read_table(w / "data/train/video.scp")
    utt = sorted(video)[0]
    text = read_table(w / "data/train/text", allow_empty_value=True)[utt]
    wav = read_table(w / "data/train/wav.scp")[utt]
    for st in streams:
        got = (infer._speech(st, [infer.Input(utt, wav)], "cpu", -60, {}, {}, {}) if st["modality"] == "speech"
               else infer._modal(st, [infer.Input(utt, video[utt], text)], "cpu", {}, {}))
        infer._as_stored(st, got, {})
        dump = w / f"dump/{Path(st['feats_dir']).name}/train"
        for i, name in ((0, "pooled_mean"), (1, "pooled_std")):
            dumped = kaldiio.load_mat(read_table(dump / f"{name}.scp")[utt])
            assert np.allclose(got[utt][i], dumped, atol=1e-5), (st["name"], name)
        if st["kind"] == "frames":  # bit for bit, after the same float16 rounding
            dumped = np.asarray(kaldiio.load_mat(read_table(dump / "frames.scp")[utt]), dtype=np.float32)
            assert np.array_equal(got[utt][2], dumped), st["name"]


def test_caption_on_new_wavs(new_files, capsys):
    exp, folder, files, _ = new_files
    assert infer.main(["--exp", str(exp["caption"]), *map(str, files["wav"])]) == 0
    rows = _rows(capsys.readouterr().out, ["id", "caption", "note"])
    assert list(rows) == [str(f) for f in files["wav"]]
    assert all(r[1].strip() and r[2] == "" for r in rows.values())


def test_text_only_head_on_transcripts_alone(new_files, tmp_path, capsys):
    exp, _, _, _ = new_files
    t = tmp_path / "t.txt"
    t.write_text("a 今天真的太开心了\nb 我有点难过\nc\n", encoding="utf-8")  # c: an empty transcript
    assert infer.main(["--exp", str(exp["text"]), "--text", str(t)]) == 1
    rows = _rows(capsys.readouterr().out, HEADER)
    assert list(rows) == ["a", "b", "c"]
    _probs_ok(rows["a"])
    _probs_ok(rows["b"])
    assert rows["c"][1] == "-" and "lacks text: an empty transcript" in rows["c"][-1]


def test_visual_only_head_on_mp4s_and_a_wav(new_files, capsys):
    exp, folder, files, _ = new_files
    assert infer.main(["--exp", str(exp["visual"]), *map(str, files["mp4"]), str(files["wav"][0])]) == 1
    rows = _rows(capsys.readouterr().out, HEADER)
    for f in files["mp4"]:
        _probs_ok(rows[str(f)])
    wav = rows[str(files["wav"][0])]
    assert wav[1] == "-" and "lacks visual: no video (an audio file)" in wav[-1] and "allow_missing" in wav[-1]


def test_an_unreadable_file_among_good_ones(new_files, tmp_path, capsys):
    """A corrupt mp4 and a missing wav fail on their own lines; the good files are predicted; exit status 1."""
    exp, folder, files, text = new_files
    bad = folder / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    gone = tmp_path / "gone.wav"
    for name in ("fusion", "speech"):
        rc = infer.main(["--exp", str(exp[name]), str(files["mp4"][0]), str(bad), str(gone), str(files["mp4"][1])])
        out, err = capsys.readouterr()
        assert rc == 1
        rows = _rows(out, HEADER)
        assert list(rows) == [str(files["mp4"][0]), str(bad), str(gone), str(files["mp4"][1])]
        for f in files["mp4"]:
            _probs_ok(rows[str(f)])
        for f in (bad, gone):
            assert rows[str(f)][1] == "-" and rows[str(f)][-1].startswith("unreadable: ")
            assert all(v == "nan" for v in rows[str(f)][2:-1])
        assert "2 not predicted" in err


def test_a_model_without_allow_missing_names_the_missing_modality(new_files, capsys):
    exp, folder, files, text = new_files
    assert infer.main(["--exp", str(exp["strict"]), *map(str, files["mp4"]), "--text", str(text)]) == 0
    for r in _rows(capsys.readouterr().out, HEADER).values():
        _probs_ok(r)
    assert infer.main(["--exp", str(exp["strict"]), str(files["mp4"][0]), str(files["wav"][1])]) == 1
    rows = _rows(capsys.readouterr().out, HEADER)
    for r in rows.values():
        assert r[1] == "-" and "lacks text: no transcript" in r[-1] and "not trained with allow_missing" in r[-1]


def test_transcript_keys_that_match_no_input_are_refused(new_files, tmp_path, capsys):
    exp, folder, files, _ = new_files
    t = tmp_path / "t.txt"
    t.write_text("clip0 a typo in the key\n", encoding="utf-8")
    assert infer.main(["--exp", str(exp["fusion"]), str(files["mp4"][0]), "--text", str(t)]) == 1
    assert "1 transcript(s) match no input (first: clip0)" in capsys.readouterr().err


def test_a_changed_fit_of_the_text_baseline_is_refused(new_files, workdir, capsys, monkeypatch, tmp_path):
    """Run from another dir, the text baseline would fit on other transcripts: refused, naming the config."""
    exp, _, _, text = new_files
    w, _ = workdir
    other = tmp_path / "elsewhere"
    (other / "data/train").mkdir(parents=True)
    (other / "data/train/text").write_text("x1 完全不同的文本\nx2 另外一句话\n", encoding="utf-8")
    exp_abs = w / exp["text"]
    monkeypatch.chdir(other)
    assert infer.main(["--exp", str(exp_abs), "--text", str(text)]) == 1
    err = capsys.readouterr().err
    assert f"{exp_abs}/upstream.yaml: the transform this config fits" in err


def test_caption_equals_stage4_decoding(new_files, workdir):
    """On val wavs, the captions of inference are the ones stage 4's decoding gives from the dumped frames."""
    import torch

    from etser.caption.data import load_frames, read_captions
    from etser.caption.decode import generate, load_trained

    w, exp = workdir
    model, info = load_trained(exp["caption"])
    cs = read_captions(w / "data/val", "style")
    caption = dict(zip(cs.utts, cs.captions))
    keep = sorted(cs.utts)[:8]
    cs.utts, cs.captions = keep, [caption[u] for u in keep]
    load_frames(cs, w / "dump/fbank_no_cmvn/val", info["layers"])
    dc = info["conf"]["decode_conf"]
    torch.manual_seed(0)
    want = generate(model, cs, "cpu", int(dc["num_beams"]), int(dc["max_len"]), float(dc["length_penalty"]))
    wav = read_table(w / "data/val/wav.scp")
    rows, failed = infer.predict(infer.load_model(exp["caption"]), [infer.Input(u, wav[u]) for u in keep])
    assert len(set(want)) >= 2  # a captioner that says one thing to all would make this check empty
    assert not failed and [r[0] for r in rows] == want


def test_the_module_runs_as_a_command(new_files, workdir):
    """``python -m etser.learn.infer`` as a user types it, from the recipe's working dir."""
    exp, folder, files, text = new_files
    w, _ = workdir
    r = subprocess.run([sys.executable, "-m", "etser.learn.infer", "--exp", str(exp["fusion"]), str(folder),
                        "--text", str(text)], cwd=w, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    rows = _rows(r.stdout, HEADER)
    # the folder holds the two mp4s (with transcripts) and two wavs (audio only: text and visual missing)
    assert sorted(rows) == sorted(str(f) for f in files["mp4"] + files["wav"])
    for f in files["wav"]:
        note = rows[str(f)][-1]
        assert "text missing (no transcript)" in note and "visual missing (no video (an audio file))" in note
    assert "infer: 4 input(s), 0 not predicted" in r.stderr


def test_fusion_on_a_data_dir_equals_stage4(new_files, workdir, tmp_path):
    """wav.scp + video.scp + text of a data dir: the wavs' audio, the videos' frames, the transcripts, i.e.
    what stage 2 read; the probabilities are stage 4's."""
    from etser.learn.score import read_predictions, score_exp

    exp, _, _, _ = new_files
    score_exp(exp["fusion"], ["val"])
    utts, _, preds, probs, classes = read_predictions(exp["fusion"] / "decode_val" / "predictions.txt")
    out = tmp_path / "out.tsv"
    assert infer.main(["--exp", str(exp["fusion"]), "--wav_scp", "data/val/wav.scp", "--video_scp",
                       "data/val/video.scp", "--text", "data/val/text", "--output", str(out)]) == 0
    rows = _rows(out.read_text(encoding="utf-8"), ["id", "pred", *(f"p_{c}" for c in classes), "note"])
    assert set(utts) <= set(rows)
    for u, pred, p in zip(utts, preds, probs):
        assert rows[u][1] == pred and rows[u][-1] == ""
        assert np.allclose([float(v) for v in rows[u][2:-1]], p, atol=1e-4)

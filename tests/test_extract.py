"""Stage 2 extraction: batching equals one-at-a-time, chunking, stats, ark/scp round trip, resumable jobs,
run.sh stage 2 with S3PRL fbank, a local HuBERT checkpoint and a plug-in upstream."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from etser.features.dumpio import split_keys
from etser.features.extract import merge, run_job
from etser.features.modalities.speech import extract_wavs, iter_features, plan_windows
from etser.features.extract import main as extract_main
from etser.features.upstream import build_upstream, config_tag, load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "upstream"
TEST_CONF = ROOT / "tests" / "conf" / "upstream"
PY = sys.executable


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def noise(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """Amplitude-modulated noise: its statistics change over time, so windowing effects show."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    return (rng.standard_normal(n) * (0.05 + 0.1 * (1 + np.sin(2 * np.pi * 0.7 * t + seed)))).astype(np.float32)


# ---------------------------------------------------------------- tiny models of every shipped family

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from helpers_models import tiny_hf_dir, tiny_hubert_ckpt, tiny_wavlm_ckpt, tiny_whisper_dir

    d = tmp_path_factory.mktemp("models")
    return {
        "hubert_base": tiny_hf_dir(d / "hf_hubert_group", "hubert", "group"),
        "hubert_large": tiny_hf_dir(d / "hf_hubert_layer", "hubert", "layer"),
        "wav2vec2_base": tiny_hf_dir(d / "hf_w2v2_group", "wav2vec2", "group"),
        "wav2vec2_large": tiny_hf_dir(d / "hf_w2v2_layer", "wav2vec2", "layer"),
        "wavlm_base": tiny_wavlm_ckpt(d / "wavlm_group.pt", "group"),
        "wavlm_large": tiny_wavlm_ckpt(d / "wavlm_layer.pt", "layer"),
        "whisper_base": tiny_whisper_dir(d / "whisper"),
        "hubert_local": tiny_hubert_ckpt(d / "hubert_group.pt", "group"),
    }


def shipped(name: str, models: dict, **override) -> dict:
    """The shipped config of ``name`` with its checkpoint replaced by the tiny model of the same family."""
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    family = "whisper_base" if name.startswith("whisper_") else name  # one tiny Whisper for every Whisper config
    if family in models:
        if "factory" in cfg:
            cfg["args"]["ckpt"] = str(models[family])
        else:
            cfg["ckpt"] = str(models[family])
    for key, value in override.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


# whisper_large*.yaml are whisper_base*.yaml with another checkpoint (test_whisper_configs_differ_only_in_checkpoint),
# so one tiny Whisper covers both; whisper_base is the decoder route, whisper_base_encoder the encoder's states.
SHIPPED = ["fbank", "mfcc", "mel", "spectrogram", "fbank_no_cmvn", "hubert_base", "hubert_large", "wav2vec2_base",
           "wav2vec2_large", "wavlm_base", "wavlm_large", "whisper_base", "whisper_base_encoder"]


def test_whisper_configs_differ_only_in_checkpoint():
    for route in ("", "_encoder"):
        base, large = (load_config(CONF / f"whisper_{s}{route}.yaml") for s in ("base", "large"))
        for cfg in (base, large):
            cfg["args"].pop("ckpt")
            cfg.pop("download")
        assert base == large


class Recorder:
    """Wraps an upstream's model to record the batches it is given."""

    def __init__(self, up):
        self.inner, self.sizes, self.longest = up.model, [], 0
        up.model = self

    def __call__(self, wavs):
        self.sizes.append(len(wavs))
        self.longest = max(self.longest, max(len(w) for w in wavs))
        return self.inner(wavs)


# ---------------------------------------------------------------- windows

def test_plan_windows_cover_every_frame_once():
    stride = 320
    assert plan_windows(10_000, stride, 32_000, 16_000) == [(0, 10_000, 0, None)]
    for n in (32_001, 50_000, 112_555, 160_000, 16000 * 61 + 7):
        wins = plan_windows(n, stride, 32_000, 16_000)
        total = (n - 400) // stride + 1  # a conv encoder's frames for n samples
        covered = []
        for i, (start, end, keep_from, keep_to) in enumerate(wins):
            assert start % stride == 0 and end - start <= 32_000
            last = (end - start - 400) // stride + 1 + start // stride
            keep_to = last if keep_to is None else keep_to
            assert start // stride <= keep_from < keep_to <= last
            if 0 < i:  # an inner boundary keeps >= overlap/2 - 1 frame of context
                assert keep_from * stride - start >= 8000 - stride
            covered += range(keep_from, keep_to)
        assert covered == list(range(total)), n
        assert wins[-1][1] == n


# ---------------------------------------------------------------- batching (issue: fairseq #3227)

@pytest.mark.parametrize("name", SHIPPED)
def test_batched_equals_one_at_a_time(models, name):
    """Every shipped config's batch policy gives the features of one-utterance-at-a-time within 1e-4."""
    cfg = shipped(name, models, frames={"layers": "all", "dtype": "float32"},
                  batch={"max_items": 8, "max_seconds": 60})
    wavs = [("a", noise(1.3, 1)), ("b", noise(1.3, 2)), ("e", noise(1.3, 5)), ("c", noise(0.9, 3)),
            ("d", noise(2.2, 4)), ("f", noise(0.71, 6))]  # consecutive equal lengths, as a job orders them
    up = build_upstream(cfg)
    rec = Recorder(up)
    batched = {f.utt: f for f in iter_features(up, wavs)}
    assert max(rec.sizes) > 1, "nothing was batched: the test would prove nothing"
    if cfg["batch"]["policy"] == "equal_length":
        assert sorted(rec.sizes) == [1, 1, 1, 3]
    up.cfg = copy.deepcopy(up.cfg)
    up.cfg["batch"]["max_items"] = 1
    for f in iter_features(up, wavs):
        g = batched[f.utt]
        assert g.num_frames == f.num_frames
        for a, b in ((g.mean, f.mean), (g.std, f.std), (g.frames, f.frames)):
            assert rel(a, b) <= 1e-4, (name, f.utt)


def test_naive_padding_would_change_base_features(models):
    """Why the policy exists: padding a Base (GroupNorm) model's batch moves its features by far more than 1e-4."""
    up = build_upstream(shipped("hubert_base", models))
    a, b = torch.from_numpy(noise(1.3, 1)), torch.from_numpy(noise(0.7, 2))
    single = up([b])
    padded = up([a, b])
    t = single[0].shape[1]
    assert rel(padded[-1][1, :t].numpy(), single[-1][0].numpy()) > 1e-2


# ---------------------------------------------------------------- chunking

# Relative L2 error of the stitched frames against the unchunked ones, and cosine of the pooled means, for a
# 7 s input cut into 2 s windows overlapping by 1 s, on tiny random models and modulated noise (bounds
# measured with margin; real models on speech with 30 s windows differ far less).  fbank_no_cmvn is local:
# exact.  Base models normalise their first conv layer over the window's time (GroupNorm): ~0.12.  Large
# (LayerNorm) models: ~0.02.  Whisper uses absolute positions inside a 30 s window, so windows of a longer
# input cannot be compared with an unchunked forward (which Whisper cannot do): only the frame count and the
# statistics are checked.
CHUNK_BOUNDS = {"fbank_no_cmvn": (1e-5, 1 - 1e-9), "hubert_base": (0.2, 0.999), "wav2vec2_base": (0.2, 0.999),
                "hubert_large": (0.05, 0.9999), "wavlm_large": (0.05, 0.9999), "whisper_base_encoder": (None, None)}


@pytest.mark.parametrize("name", sorted(CHUNK_BOUNDS))
def test_chunked_long_input(models, name):
    max_err, min_cos = CHUNK_BOUNDS[name]
    wav = noise(7.0, 9)[:-321]
    frames = {"layers": "all", "dtype": "float32"}
    chunked_cfg = shipped(name, models, frames=frames, chunk={"seconds": 2.0, "overlap": 1.0})
    up = build_upstream(chunked_cfg)
    rec = Recorder(up)
    ch = next(iter_features(up, [("long", wav)]))
    assert rec.longest <= 2 * 16000  # the model never sees more than one window: memory is bounded by it
    assert len(rec.sizes) < len(plan_windows(len(wav), up.stride, 32000, 16000))  # equal windows share batches
    L, D = ch.mean.shape
    stitched = ch.frames.reshape(ch.num_frames, L, D).astype(np.float64)
    # Statistics are those of the stitched frames.
    assert rel(ch.mean, stitched.mean(0)) < 1e-5 and rel(ch.std, stitched.std(0)) < 1e-5
    if name.startswith("whisper"):
        assert ch.num_frames == -(-len(wav) // 320)
        return
    up.cfg = load_config(shipped(name, models, frames=frames, chunk={"seconds": 30.0, "overlap": 4.0}))
    full = next(iter_features(up, [("long", wav)]))
    assert full.num_frames == ch.num_frames
    ref = full.frames.reshape(full.num_frames, L, D)
    for layer in range(L):
        assert rel(stitched[:, layer], ref[:, layer]) <= max_err, layer
        # in float64: a float32 dot product of two equal vectors can itself round to 1 - 6e-8
        a, b = ch.mean[layer].astype(np.float64), full.mean[layer].astype(np.float64)
        cos = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        assert cos >= min_cos, layer


# ---------------------------------------------------------------- jobs, merge, ark/scp

def make_data(root: Path, n: int = 6, sets=("train",)) -> Path:
    """wav.scp + utt2dur with 16/44.1/48 kHz, mono and stereo PCM16 files of 0.5-2.4 s."""
    for s, name in enumerate(sets):
        data = root / "data" / name
        data.mkdir(parents=True, exist_ok=True)
        wav, dur = [], []
        for i in range(n):
            sr = (16000, 44100, 48000)[i % 3]
            seconds = 0.5 + 0.37 * i
            x = noise(seconds, 100 * s + i, sr)
            x = np.stack([x, 0.5 * x], 1) if i % 2 else x
            path = root / "wav" / name / f"u{i:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, sr, subtype="PCM_16")
            utt = f"S{1 + i % 2:02d}-G00001_02_{1 + i % 2:02d}_{i:03d}"
            wav.append(f"{utt} {path}\n")
            dur.append(f"{utt} {seconds:.3f}\n")
        (data / "wav.scp").write_text("".join(sorted(wav)))
        (data / "utt2dur").write_text("".join(sorted(dur)))
    return root / "data" / sets[0]


def check_dump(dump: Path, data: Path, cfg: dict, up=None):
    """kaldiio reads back what an in-memory forward gives."""
    wav = dict(line.split(" ", 1) for line in (data / "wav.scp").read_text().splitlines())
    up = up or build_upstream(cfg)
    ref = extract_wavs(up, wav, frame_layers=cfg["frames"]["layers"])
    means = dict(kaldiio.load_scp_sequential(str(dump / "pooled_mean.scp")))
    stds = dict(kaldiio.load_scp_sequential(str(dump / "pooled_std.scp")))
    assert list(means) == sorted(wav) and list(stds) == sorted(wav)
    n2f = dict(line.split() for line in (dump / "utt2num_frames").read_text().splitlines())
    meta = json.loads((dump / "meta.json").read_text())
    for utt, f in ref.items():
        assert means[utt].dtype == np.float32 and means[utt].shape == (meta["num_layers"], meta["dim"])
        assert rel(means[utt], f.mean) < 1e-6 and rel(stds[utt], f.std) < 1e-6
        assert int(n2f[utt]) == f.num_frames
    if cfg["frames"]["layers"] is not None:
        frames = dict(kaldiio.load_scp_sequential(str(dump / "frames.scp")))
        for utt, f in ref.items():
            assert frames[utt].shape == f.frames.shape == (f.num_frames, len(meta["frame_layers"]) * meta["dim"])
            tol = 1e-3 if cfg["frames"]["dtype"] == "float16" else 1e-6
            assert rel(frames[utt], f.frames) < tol
    assert load_config(dump / "upstream.yaml") == load_config(cfg)
    return meta


def test_jobs_merge_and_rerun(tmp_path, models, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = make_data(tmp_path)
    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({"name": "hubert_local", "ckpt": str(models["hubert_local"]),
                                    "frames": {"layers": [0, -1], "dtype": "float16"}}))
    dump = Path("dump/tiny/train")
    (dump / "split3").mkdir(parents=True)
    (dump / "split3" / "done.2").write_text('{"job_id": ')  # unreadable marker: an unfinished job, not a crash
    with pytest.raises(RuntimeError, match="jobs 1 2 3 of 3 are not finished"):
        merge(conf, data, dump, 3)
    for j in (1, 3):
        run_job(conf, data, dump, nj=3, job=j)
    with pytest.raises(RuntimeError, match=r"jobs 2 of 3 are not finished.*extract.<job>.log"):
        merge(conf, data, dump, 3)
    assert not (dump / "pooled_mean.scp").exists()
    run_job(conf, data, dump, nj=3, job=2)
    meta = merge(conf, data, dump, 3)
    assert (meta["num_layers"], meta["dim"], meta["frame_rate"], meta["frame_layers"]) == (3, 32, 50.0, [0, 2])
    assert meta["dtype"] == {"pooled": "float32", "frames": "float16"} and meta["num_utts"] == 6
    assert {"torch", "transformers", "kaldiio"} <= set(meta["versions"]) and meta["config_hash"] in config_tag(conf)
    check_dump(dump, data, load_config(conf))
    # scp paths are absolute (they read the same from any working directory), sorted, one ark per job.
    lines = (dump / "pooled_mean.scp").read_text().splitlines()
    ark = (tmp_path / "dump/tiny/train/split3").resolve() / "pooled_mean.1.ark"
    assert lines == sorted(lines) and lines[0].split()[1].startswith(f"{ark}:")
    # A rerun skips finished jobs ...
    capsys.readouterr()
    before = (dump / "split3" / "pooled_mean.2.ark").stat().st_mtime_ns
    run_job(conf, data, dump, nj=3, job=2)
    assert "already done" in capsys.readouterr().err
    assert (dump / "split3" / "pooled_mean.2.ark").stat().st_mtime_ns == before
    # ... but redoes a job whose utterances changed (here: one file moved).
    wav_scp = data / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    utt, path = lines[-1].split(" ", 1)
    shutil.copy(path, tmp_path / "moved.wav")
    wav_scp.write_text("\n".join(lines[:-1] + [f"{utt} {tmp_path / 'moved.wav'}"]) + "\n")
    with pytest.raises(RuntimeError, match="jobs 3 of 3"):
        merge(conf, data, dump, 3)
    run_job(conf, data, dump, nj=3, job=3)
    assert not (dump / "pooled_mean.scp").exists()  # the old merge pointed into the ark job 3 replaced
    assert merge(conf, data, dump, 3)["num_utts"] == 6


def test_split_keys_is_a_partition():
    keys = [f"u{i}" for i in range(10)]
    parts = split_keys(keys, 3)
    assert [len(p) for p in parts] == [4, 3, 3] and sum(parts, []) == keys
    assert split_keys(keys, 3) == parts and split_keys(keys[:2], 3) == [["u0"], ["u1"], []]


def test_split_keys_matches_utils_split_scp(tmp_path):
    """A job extracts exactly what `utils/split_scp.py --nj N --job J` shows (Kaldi's split_scp.pl cut)."""
    keys = [f"u{i:02d}" for i in range(11)]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{k} /x/{k}.wav\n" for k in keys))
    for nj in (1, 3, 4, 11):
        for j, part in enumerate(split_keys(keys, nj), 1):
            out = subprocess.run([sys.executable, str(ROOT / "utils" / "split_scp.py"), "--nj", str(nj),
                                  "--job", str(j), str(scp)], capture_output=True, text=True, check=True).stdout
            assert [line.split()[0] for line in out.splitlines()] == part, (nj, j)


def test_prefetch_raises_errors_in_order():
    """An error in load, or in the item iterator itself, reaches the consumer after the items before it."""
    from etser.features.dumpio import prefetch

    def load(x):
        if x == 3:
            raise ValueError("cannot load 3")
        return 10 * x

    got = []
    with pytest.raises(ValueError, match="cannot load 3"):
        got.extend(prefetch(range(6), load, depth=2))
    assert got == [(0, 0), (1, 10), (2, 20)]

    def items():
        yield from (0, 1)
        raise OSError("table unreadable")

    got = []
    with pytest.raises(OSError, match="table unreadable"):  # not a silently shorter run
        got.extend(prefetch(items(), lambda x: x))
    assert got == [(0, 0), (1, 1)]


def test_pooled_features_of_an_iterator(tmp_path):
    """The inference API takes a dict, a list or a one-pass iterator of (utt, wav path), in that order."""
    from etser.features.modalities.speech import pooled_features

    data = make_data(tmp_path, n=3)
    pairs = [tuple(line.split(" ", 1)) for line in (data / "wav.scp").read_text().splitlines()]
    up = build_upstream({"factory": f"{TEST_CONF}/tiny_plugin.py:build"})
    utts, means, stds = pooled_features(up, iter(pairs[::-1]))
    ref_utts, ref_means, ref_stds = pooled_features(up, dict(pairs))
    assert utts == ref_utts[::-1] == [u for u, _ in pairs[::-1]] and means.shape == (3, 3, 8)
    np.testing.assert_array_equal(means, ref_means[::-1])
    np.testing.assert_array_equal(stds, ref_stds[::-1])


def test_model_error_names_the_utterance(tmp_path):
    """An error inside the model (e.g. out of memory on the longest utterance) says which utterance it was."""
    (tmp_path / "oom.py").write_text(
        "import torch\n"
        "def build():\n"
        "    def f(wavs):\n"
        "        if any(len(w) == 12345 for w in wavs):\n"
        "            raise RuntimeError('CUDA out of memory (simulated)')\n"
        "        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)\n"
        "        return {'hidden_states': [x[:, : x.shape[1] // 160 * 160].reshape(len(wavs), -1, 160)]}\n"
        "    return f\n")
    up = build_upstream({"factory": f"{tmp_path}/oom.py:build"})
    wavs = [("S01-ok", noise(0.5, 1)), ("S02-big", noise(1.0, 2)[:12345])]
    with pytest.raises(RuntimeError) as err:
        list(iter_features(up, wavs, where=lambda u: f"utterance {u} (/x/{u}.wav)"))
    msg = str(err.value)
    assert "utterance S02-big (/x/S02-big.wav)" in msg and "out of memory (simulated)" in msg
    assert "S01-ok" not in msg


def test_bad_audio_fails_naming_utterance_and_file(tmp_path, capsys):
    data = make_data(tmp_path, n=3)
    bad = tmp_path / "wav" / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    with open(data / "wav.scp", "a") as f:
        f.write(f"S09-bad {bad}\n")
    rc = extract_main(["job", "--config", str(CONF / "fbank.yaml"), "--data", str(data), "--dir",
                       str(tmp_path / "dump"), "--nj", "1", "--job", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "S09-bad" in err and str(bad) in err
    assert not (tmp_path / "dump" / "split1" / "done.1").exists()


def test_kill_and_rerun_is_byte_identical(tmp_path, models, monkeypatch):
    """kill -9 a job mid-way (blocked on reading one file after others were written), rerun: same bytes."""
    data = make_data(tmp_path, n=8)
    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({"name": "hubert_local", "ckpt": str(models["hubert_local"]),
                                    "frames": {"layers": "all"}}))
    cmd = [PY, "-m", "etser.features.extract", "job", "--config", str(conf), "--data", "data/train", "--dir", "dump/t/train",
           "--nj", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    monkeypatch.chdir(tmp_path)  # scp paths are relative to the working directory

    def files():
        return {p.relative_to(tmp_path / "dump"): p.read_bytes()
                for p in sorted((tmp_path / "dump").rglob("*")) if p.is_file()}

    for j in (1, 2):
        subprocess.run(cmd + ["--job", str(j)], cwd=tmp_path, env=env, check=True, capture_output=True)
    merge(conf, data, tmp_path / "dump" / "t" / "train", 2)
    reference = files()
    shutil.rmtree(tmp_path / "dump")

    # Job 2 processes longest first: the shortest utterance of its part is the last one it reads.
    part = split_keys(sorted(l.split()[0] for l in (data / "wav.scp").read_text().splitlines()), 2)[1]
    dur = dict(l.split() for l in (data / "utt2dur").read_text().splitlines())
    victim = min(part, key=lambda u: float(dur[u]))
    # Reading the victim blocks for good, so the job is stuck mid-way, deterministically. (Not a named pipe
    # in wav.scp: stage 2 refuses those without opening them.)
    blocking = [PY, "-c", "import sys, time; import etser.features.extract as e, etser.features.modalities.speech as s\n"
                "real = s.load_audio\n"
                "def load(path, utt=None, **kw):\n"
                f"    if utt == {victim!r}: time.sleep(3600)\n"
                "    return real(path, utt, **kw)\n"
                "s.load_audio = load; sys.exit(e.main(sys.argv[1:]))"] + cmd[3:]
    subprocess.run(cmd + ["--job", "1"], cwd=tmp_path, env=env, check=True, capture_output=True)
    proc = subprocess.Popen(blocking + ["--job", "2"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    tmp_ark = tmp_path / "dump/t/train/split2/pooled_mean.2.ark.tmp"
    deadline = time.time() + 120
    while time.time() < deadline and not tmp_ark.exists():
        time.sleep(0.1)
    # The other utterances are processed while the reader waits on the fifo; the job never ends by itself.
    n_before = len(part) - 1
    while time.time() < deadline and tmp_ark.stat().st_size < n_before * 100:
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()
    assert tmp_ark.stat().st_size >= n_before * 100  # killed with part of its output written
    proc.kill()  # SIGKILL
    proc.wait()
    proc.stderr.close()
    assert tmp_ark.exists() and not (tmp_path / "dump/t/train/split2/done.2").exists()
    assert not (tmp_path / "dump/t/train/split2/pooled_mean.2.ark").exists()
    with pytest.raises(RuntimeError, match="jobs 2 of 2"):
        merge(conf, data, tmp_path / "dump" / "t" / "train", 2)
    for j in (1, 2):  # the rerun: job 1 is skipped, job 2 redone
        res = subprocess.run(cmd + ["--job", str(j)], cwd=tmp_path, env=env, check=True, capture_output=True,
                             text=True)
        assert ("already done" in res.stderr) == (j == 1)
    merge(conf, data, tmp_path / "dump" / "t" / "train", 2)
    got = files()
    assert sorted(got) == sorted(reference)
    for name in reference:
        assert got[name] == reference[name], name


# ---------------------------------------------------------------- run.sh stage 2, as a user runs it

@pytest.fixture()
def expdir(tmp_path, models):
    """An experiment directory like egs/emotiontalk/, with the tests' tiny upstream configs added."""
    for name in ("run.sh", "path.sh", "cmd.sh", "utils", "local"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "conf" / "upstream").mkdir(parents=True)
    for p in (ROOT / "conf").iterdir():
        if p.name != "upstream":
            (tmp_path / "conf" / p.name).symlink_to(p)
    for p in CONF.glob("*.yaml"):
        (tmp_path / "conf" / "upstream" / p.name).symlink_to(p)
    for p in TEST_CONF.iterdir():
        shutil.copy(p, tmp_path / "conf" / "upstream" / p.name)
    from helpers_models import tiny_hubert_ckpt

    tiny_hubert_ckpt(tmp_path / "downloads" / "tiny_hubert.pt", "group")
    make_data(tmp_path, n=5, sets=("train", "val"))
    return tmp_path


def run_sh(expdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(["./run.sh", "--stage", "2", "--stop_stage", "2", *args], cwd=expdir,
                          env=env, capture_output=True, text=True)


def test_run_sh_stage2(expdir):
    for upstream, sets, nj in (("fbank", "train val", "2"), ("tiny_hubert", "train", "2"), ("tiny_plugin", "val", "1")):
        res = run_sh(expdir, "--upstream", upstream, "--sets", sets, "--nj", nj)
        assert res.returncode == 0, res.stderr[-3000:]
        tag = config_tag(expdir / "conf" / "upstream" / f"{upstream}.yaml")
        cwd = os.getcwd()
        os.chdir(expdir)  # scp paths and relative checkpoints are relative to the experiment directory
        try:
            for s in sets.split():
                dump = Path("dump") / tag / s
                cfg = load_config(expdir / "conf" / "upstream" / f"{upstream}.yaml")
                meta = check_dump(dump, Path("data") / s, cfg)
                assert meta["upstream"] == upstream
                log = (dump / "log" / "extract.1.log").read_text()
                assert "utts/s" in log and "RTF" in log and "peak RSS" in log
        finally:
            os.chdir(cwd)
        if upstream == "fbank":  # S3PRL's fbank normalises each utterance: the merge says so
            assert "pooled mean and std are the same for every utterance" in res.stderr
    # A second run skips the finished sets; an unknown upstream lists the available ones.
    res = run_sh(expdir, "--upstream", "fbank", "--sets", "train")
    assert res.returncode == 0 and "is complete and up to date, skipped" in res.stderr
    res = run_sh(expdir, "--upstream", "hubret_base", "--sets", "train")
    assert res.returncode != 0
    assert "unknown upstream 'hubret_base'" in res.stderr
    assert "hubert_base" in res.stderr and "tiny_plugin" in res.stderr

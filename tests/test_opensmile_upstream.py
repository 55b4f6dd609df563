"""openSMILE upstreams (conf/upstream/egemaps*.yaml, compare_2016*.yaml) through stage 2's job runner: the
dumps hold what the ``opensmile`` package gives on the recipe's 16 kHz audio, functionals as one frame per
utterance, LLDs at 100 frames/s; short audio, bad audio and reruns."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import opensmile
import pytest
import soundfile as sf

from etser.features.audio import AudioLoadError, load_audio
from etser.features.extract import merge, run_job

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "upstream"


def voice(seconds: float, f0: float, seed: int, sr: int) -> np.ndarray:
    """A vowel-like harmonic tone with vibrato in noise: F0, jitter, formant-ish features are defined."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.3 + 0.2 * np.sin(2 * np.pi * 1.3 * t) ** 2)
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def make_data(root: Path, short: bool = True) -> tuple[Path, dict[str, str]]:
    """44.1 kHz stereo and 16 kHz mono files (the recipe resamples), one of 0.055 s when ``short``."""
    root.mkdir(parents=True, exist_ok=True)
    specs = [("S01-a", 1.7, 120.0, 44100, 2), ("S01-b", 2.3, 210.0, 16000, 1), ("S02-c", 0.9, 160.0, 44100, 1)]
    if short:
        specs.append(("S02-d", 0.055, 180.0, 16000, 1))
    wav = {}
    for i, (utt, secs, f0, sr, ch) in enumerate(specs):
        x = voice(secs, f0, i, sr)
        path = root / f"{utt}.wav"
        sf.write(path, np.stack([x, 0.7 * x], 1) if ch == 2 else x, sr, subtype="PCM_16")
        wav[utt] = str(path)
    data = root / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav.items())))
    return data, wav


def extract(name: str, data: Path, out: Path, nj: int = 2) -> dict:
    for job in range(1, nj + 1):
        run_job(CONF / f"{name}.yaml", data, out, nj=nj, job=job)
    return merge(CONF / f"{name}.yaml", data, out, nj)


def direct(feature_set: str, level: str, path: str) -> np.ndarray:
    """The opensmile package on the recipe's audio (16 kHz mono), padded to the 60 ms openSMILE needs."""
    x = load_audio(path)
    x = np.pad(x, (0, max(0, 960 - len(x))))
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[level])
    return smile.process_signal(x, 16000).to_numpy(np.float32)


@pytest.mark.parametrize("name, feature_set, dim", [("egemaps", "eGeMAPSv02", 88),
                                                     ("compare_2016", "ComParE_2016", 6373)])
def test_functionals_are_the_pooled_mean(tmp_path, name, feature_set, dim):
    data, wav = make_data(tmp_path / "c")
    meta = extract(name, data, tmp_path / "dump")
    assert (meta["num_layers"], meta["dim"]) == (1, dim)
    means = dict(kaldiio.load_scp_sequential(str(tmp_path / "dump" / "pooled_mean.scp")))
    stds = dict(kaldiio.load_scp_sequential(str(tmp_path / "dump" / "pooled_std.scp")))
    frames = dict(line.split() for line in (tmp_path / "dump" / "utt2num_frames").read_text().splitlines())
    assert sorted(means) == sorted(wav)
    for utt, path in wav.items():
        ref = direct(feature_set, "Functionals", path)
        assert ref.shape == (1, dim) and np.isfinite(means[utt]).all()
        np.testing.assert_allclose(means[utt], ref, rtol=1e-6, atol=1e-6)
        assert not stds[utt].any() and frames[utt] == "1"
    # the functionals tell the utterances apart (F0 120, 210, 160 Hz): not a constant cache
    assert meta["pooled_stats_informative"]
    f0 = [i for i, n in enumerate(opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set]).feature_names)
          if n.startswith("F0semitoneFrom27.5Hz_sma3nz_amean") or n == "F0final_sma_amean"][0]
    assert means["S01-a"][0, f0] < means["S02-c"][0, f0] < means["S01-b"][0, f0]


def test_lld_frames_at_100_per_second(tmp_path):
    data, wav = make_data(tmp_path / "c")
    meta = extract("egemaps_lld", data, tmp_path / "dump")
    assert (meta["num_layers"], meta["dim"], meta["frame_rate"], meta["frame_layers"]) == (1, 25, 100.0, [0])
    frames = dict(kaldiio.load_scp_sequential(str(tmp_path / "dump" / "frames.scp")))
    means = dict(kaldiio.load_scp_sequential(str(tmp_path / "dump" / "pooled_mean.scp")))
    n2f = dict(line.split() for line in (tmp_path / "dump" / "utt2num_frames").read_text().splitlines())
    for utt, path in wav.items():
        ref = direct("eGeMAPSv02", "LowLevelDescriptors", path)
        n = max(len(load_audio(path)), 960)
        assert frames[utt].shape == ref.shape == (n // 160 - 4, 25) and int(n2f[utt]) == len(ref)
        np.testing.assert_allclose(frames[utt], ref, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(means[utt][0], ref.astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)


def test_rerun_skips_finished_jobs(tmp_path, capsys):
    data, _ = make_data(tmp_path / "c", short=False)
    out = tmp_path / "dump"
    extract("egemaps", data, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "split2").glob("*.ark")}
    capsys.readouterr()
    extract("egemaps", data, out)
    assert capsys.readouterr().err.count("already done") == 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "split2").glob("*.ark")} == before


def test_bad_audio_is_named(tmp_path):
    data, wav = make_data(tmp_path / "c", short=False)
    Path(wav["S01-b"]).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioLoadError, match=r"S01-b.*S01-b\.wav|S01-b\.wav.*S01-b"):
        extract("egemaps", data, tmp_path / "dump", nj=1)
    assert not (tmp_path / "dump" / "split1" / "done.1").exists()


def test_non_finite_opensmile_output_stops_naming_the_utterance(tmp_path, monkeypatch):
    """Below 60 ms openSMILE fills its output with NaN: without the padding that is an error naming the
    utterance, never a dump."""
    import etser.features.opensmile_upstream as osu

    data, _ = make_data(tmp_path / "c")
    monkeypatch.setattr(osu, "MIN_SAMPLES", 0)
    with pytest.raises(RuntimeError, match=r"S02-d.*non-finite"):
        extract("egemaps", data, tmp_path / "dump", nj=1)
    assert not (tmp_path / "dump" / "pooled_mean.scp").exists()


def test_meta_records_the_opensmile_version(tmp_path):
    data, _ = make_data(tmp_path / "c", short=False)
    extract("egemaps", data, tmp_path / "dump", nj=1)
    meta = json.loads((tmp_path / "dump" / "meta.json").read_text())
    assert meta["versions"]["opensmile"] == opensmile.__version__

"""Visual stage 2: the face-feature baseline learns expressions; tiny HF image/video models run from one
YAML; batched equals single-video extraction; bad videos are listed with file and reason."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from etser.datadir import read_table
from etser.features.extract import merge, run_job
from etser.features.upstream import UpstreamError, load_config, main as upstream_main
from helpers_video import audio_only_mp4, blank_video, face_video, tiny_image_model, video_dataset

REPO = Path(__file__).resolve().parents[1]


def _stage2(cfg: dict | str, data: Path, out: Path, nj: int = 1) -> dict:
    for j in range(1, nj + 1):
        run_job(cfg, data, out, nj=nj, job=j)
    return merge(cfg, data, out, nj=nj)


def _pooled(out: Path) -> dict[str, np.ndarray]:
    return {u: np.asarray(kaldiio.load_mat(v)) for u, v in read_table(out / "pooled_mean.scp").items()}


def test_baseline_learns_expressions(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data, labels = video_dataset(tmp_path, per_class=8, speakers=4, n=6)
    out = tmp_path / "dump"
    meta = _stage2(str(REPO / "conf/upstream/visual_baseline.yaml"), data, out, nj=2)
    assert meta["modality"] == "visual" and meta["schema_version"] == 2 and meta["num_layers"] == 1
    assert meta["num_utts"] == 32 and meta["num_excluded"] == 0 and meta["num_no_face"] == 0
    assert set(read_table(out / "utt2num_frames").values()) == {"6"}
    mean = _pooled(out)
    std = {u: np.asarray(kaldiio.load_mat(v)) for u, v in read_table(out / "pooled_std.scp").items()}
    utts = sorted(mean)
    x = np.stack([np.concatenate([mean[u][0], std[u][0]]) for u in utts])
    y = [labels[u] for u in utts]
    # leave one speaker out: expression, not skin colour or face size, must carry the label
    acc = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), x, y,
                          groups=[u.split("_")[0] for u in utts], cv=LeaveOneGroupOut()).mean()
    print(f"visual baseline, leave-one-speaker-out accuracy {acc:.3f} (chance 0.25)")
    assert acc >= 0.8, acc


def test_bad_videos_listed_and_job_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = face_video(tmp_path / "good.mp4", "happy", 0, n=5)
    blank = blank_video(tmp_path / "blank.mp4", n=4)
    audio = audio_only_mp4(tmp_path / "audio.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00junk" * 50)
    rows = {"u1": good, "u2": blank, "u3": audio, "u4": tmp_path / "corrupt.mp4", "u5": tmp_path / "missing.mp4"}
    (data / "video.scp").write_text("".join(f"{u} {p}\n" for u, p in rows.items()))
    cfg = load_config(str(REPO / "conf/upstream/visual_baseline.yaml"))
    out = tmp_path / "dump"
    meta = _stage2(cfg, data, out)
    log = capsys.readouterr().err
    excluded = read_table(out / "excluded")
    assert sorted(excluded) == ["u3", "u4", "u5"]
    assert "no video stream" in excluded["u3"] and str(audio) in excluded["u3"]
    assert "not a readable video file" in excluded["u4"] and "no such file" in excluded["u5"]
    assert "3 excluded" in log and "1 without a face" in log
    assert read_table(out / "no_face") == {"u2": f"{blank}\t4"}
    assert sorted(_pooled(out)) == ["u1", "u2"] and meta["num_excluded"] == 3
    # unchanged inputs: the job is skipped; the no-face video excluded instead when the config says so
    assert "skipped" not in log
    run_job(cfg, data, out)
    assert "already done" in capsys.readouterr().err
    strict = {**cfg, "face": {**cfg["face"], "no_face": "exclude"}}
    _stage2(strict, data, tmp_path / "dump2")
    assert "no face found in any of 4" in read_table(tmp_path / "dump2" / "excluded")["u2"]
    with pytest.raises(RuntimeError, match=r"utterance u3 \(.*audio.mp4\): unreadable video: .*no video stream"):
        run_job({**cfg, "on_bad_input": "fail"}, data, tmp_path / "dump3")


@pytest.mark.parametrize("kind,name,sampling", [
    ("clip", "hf_image", {"mode": "all"}), ("dinov2", "hf_image", {"mode": "uniform", "value": 4}),
    ("data2vec", "hf_image", {"mode": "all"}), ("videomae", "hf_video", {"mode": "uniform", "value": 4})])
def test_tiny_hf_models_from_one_yaml(tmp_path, kind, name, sampling):
    ckpt = tiny_image_model(kind, tmp_path / kind)
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"v{i} {face_video(tmp_path / f'v{i}.mp4', e, i % 2, n=5 + i, size=64, seed=i)}"
            for i, e in enumerate(["happy", "sad", "angry"])]
    (data / "video.scp").write_text("\n".join(rows) + "\n")
    conf = tmp_path / f"visual_{kind}.yaml"
    conf.write_text(yaml.safe_dump({"modality": "visual", "name": name, "ckpt": str(ckpt), "sampling": sampling,
                                    "face": {"crop": "haar", "size": 48}, "batch": {"max_items": 64},
                                    "frames": {"layers": "all", "dtype": "float32"}}))
    assert upstream_main(["tag", str(conf), "--check_ckpt"]) == 0
    meta = _stage2(str(conf), data, tmp_path / "dump")
    assert meta["num_layers"] == 3 and meta["dim"] == 32 and meta["num_utts"] == 3
    nf = {u: int(v) for u, v in read_table(tmp_path / "dump" / "utt2num_frames").items()}
    if kind == "videomae":
        assert meta["time_axis"] == "clips" and nf == {"v0": 1, "v1": 1, "v2": 1}
    elif sampling["mode"] == "all":
        assert nf == {"v0": 5, "v1": 6, "v2": 7}
    else:
        assert set(nf.values()) == {4}
    frames = kaldiio.load_mat(read_table(tmp_path / "dump" / "frames.scp")["v1"])
    mean = kaldiio.load_mat(read_table(tmp_path / "dump" / "pooled_mean.scp")["v1"])
    assert frames.shape == (nf["v1"], 3 * 32)
    np.testing.assert_allclose(frames.reshape(nf["v1"], 3, 32).mean(axis=0), mean, rtol=1e-4, atol=1e-5)
    # batched (all videos in one forward) equals one frame/clip per forward
    single = tmp_path / "single.yaml"
    single.write_text(conf.read_text().replace("max_items: 64", "max_items: 1"))
    _stage2(str(single), data, tmp_path / "dump1")
    for u, m in _pooled(tmp_path / "dump").items():
        np.testing.assert_allclose(_pooled(tmp_path / "dump1")[u], m, rtol=1e-4, atol=1e-5)


def test_missing_checkpoint_stops_before_jobs(tmp_path, capsys):
    conf = tmp_path / "v.yaml"
    conf.write_text("modality: visual\nname: hf_image\nckpt: nowhere/dinov2-large\n"
                    "download: https://huggingface.co/facebook/dinov2-large\n")
    assert upstream_main(["tag", str(conf), "--check_ckpt"]) == 1
    err = capsys.readouterr().err
    assert "nowhere/dinov2-large not found" in err and "facebook/dinov2-large" in err


def test_visual_config_errors():
    with pytest.raises(UpstreamError, match="sampling.mode"):
        load_config({"modality": "visual", "name": "face_features", "sampling": {"mode": "some"}})
    with pytest.raises(UpstreamError, match="openface_dir"):
        load_config({"modality": "visual", "name": "face_features", "face": {"crop": "openface"}})
    with pytest.raises(UpstreamError, match="modality must be one of"):
        load_config({"modality": "smell", "name": "x"})
    cfg = load_config(str(REPO / "conf/upstream/visual_dinov2_large.yaml"))
    assert cfg["sampling"] == {"mode": "uniform", "value": 64} and cfg["face"]["crop"] == "haar"

"""etser.video: PyAV decoding, frame sampling, face cropping and the errors of unreadable videos."""

from __future__ import annotations

import numpy as np
import pytest

from etser.video import HaarFaces, VideoError, load_faces, probe, sampled_frames, select_indices
from helpers_video import audio_only_mp4, blank_video, face_frame, face_video

FACE = {"crop": "haar", "margin": 0.25, "min_size": 24, "size": 64, "no_face": "full_frame", "openface_dir": None}
ALL = {"mode": "all", "value": None}


def test_select_indices():
    assert select_indices(10, "all", None, 10) == list(range(10))
    assert select_indices(100, "uniform", 5, None) == [0, 25, 50, 74, 99]
    assert select_indices(3, "uniform", 16, None) == [0, 1, 2]  # fewer frames than asked: all of them
    assert select_indices(25, "fps", 2, 10.0) == [0, 5, 10, 15, 20]
    with pytest.raises(VideoError, match="frame rate"):
        select_indices(25, "fps", 2, None)


def test_decode_and_sample(tmp_path):
    p = str(face_video(tmp_path / "a.mp4", "happy", 0, n=20))
    assert probe(p) == (20, 10.0)
    frames = list(sampled_frames(p, "all", None))
    assert len(frames) == 20 and frames[0].shape == (96, 96, 3) and frames[0].dtype == np.uint8
    assert len(list(sampled_frames(p, "uniform", 4))) == 4
    assert len(list(sampled_frames(p, "fps", 5))) == 10
    # the decoded frame is the drawn one, up to H.264 loss
    drawn = face_frame("happy", 0, 0, rng=np.random.default_rng(0))
    assert np.abs(frames[0].astype(float) - drawn).mean() < 8


def test_haar_crop_finds_the_face(tmp_path):
    p = str(face_video(tmp_path / "a.mp4", "sad", 1, n=6, size=128))
    frames, found = load_faces(p, "a", ALL, FACE)
    assert found and frames.shape == (6, 64, 64, 3)
    box = HaarFaces().box(next(sampled_frames(p, "all", None)))
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 and 60 < x1 - x0 < 170 and abs((x0 + x1) / 2 - 64) < 12
    # the crop is the face: skin colour fills its middle, unlike the full frame's background corner
    none, _ = load_faces(p, "a", ALL, {**FACE, "crop": "none"})
    assert none.shape == (6, 64, 64, 3)
    assert not np.array_equal(none, frames)


def test_no_face_falls_back_to_full_frame(tmp_path):
    p = str(blank_video(tmp_path / "blank.mp4", n=5))
    frames, found = load_faces(p, "blank", ALL, FACE)
    assert not found and frames.shape == (5, 64, 64, 3)


def test_openface_images_and_npy(tmp_path):
    import cv2

    d = tmp_path / "openface" / "u1"
    d.mkdir(parents=True)
    rgb = [face_frame("angry", 0, t, size=112) for t in range(4)]
    for t, f in enumerate(rgb):
        cv2.imwrite(str(d / f"frame_det_00_{t + 1:06d}.bmp"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    np.save(tmp_path / "openface" / "u2.npy", np.stack(rgb[:3]))
    face = {**FACE, "crop": "openface", "openface_dir": str(tmp_path / "openface")}
    frames, found = load_faces("unused.mp4", "u1", ALL, face)
    assert found and frames.shape == (4, 64, 64, 3)
    assert np.abs(frames[0].astype(float) - cv2.resize(rgb[0], (64, 64), interpolation=cv2.INTER_AREA)).max() <= 1
    assert load_faces("unused.mp4", "u2", {"mode": "uniform", "value": 2}, face)[0].shape == (2, 64, 64, 3)
    with pytest.raises(VideoError, match="no OpenFace face images"):
        load_faces("unused.mp4", "u3", ALL, face)


def test_unreadable_videos_name_file_and_reason(tmp_path):
    good = face_video(tmp_path / "good.mp4", "happy", 0, n=10).read_bytes()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00junk" * 100)
    (tmp_path / "truncated.mp4").write_bytes(good[:len(good) // 3])
    i, m = good.find(b"mdat"), good.find(b"moov")
    assert 0 < i < m
    zeroed = bytearray(good)
    zeroed[i + 4:m - 4] = bytes(m - i - 8)  # the header survives, no frame decodes
    (tmp_path / "zeroed.mp4").write_bytes(bytes(zeroed))
    audio_only_mp4(tmp_path / "audio.mp4")
    cases = {"missing.mp4": "no such file", "corrupt.mp4": "not a readable video file",
             "truncated.mp4": "not a readable video file", "audio.mp4": "no video stream",
             "zeroed.mp4": "decoding failed|no decodable frame"}
    for name, reason in cases.items():
        with pytest.raises(VideoError, match=reason) as e:
            load_faces(str(tmp_path / name), "u", ALL, FACE)
        assert name in str(e.value)

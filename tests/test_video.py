"""etser.video: PyAV decoding, frame sampling, face cropping and the errors of unreadable videos."""

from __future__ import annotations

import numpy as np
import pytest

from etser.features.video import HaarFaces, crop, VideoError, load_faces, probe, sampled_frames, select_indices
from helpers_video import (audio_only_mp4, blank_video, face_frame, face_video, talking_head_video, tiny_image_model,
                           write_mp4)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

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


def test_a_fifo_or_device_is_named_not_opened(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "zero.mp4").symlink_to("/dev/zero")
    for name, what in (("fifo.mp4", "a named pipe"), ("zero.mp4", "a character device")):
        with pytest.raises(VideoError, match=f"is {what}, not a video file") as e:
            load_faces(str(tmp_path / name), "u", ALL, FACE)
        assert name in str(e.value)


class CountingHaar(HaarFaces):
    def __init__(self):
        super().__init__(detect_size=160)
        self.calls = 0

    def box(self, frame, near=None):
        self.calls += 1
        return super().box(frame, near)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


def test_sparse_detection_crops_match_per_frame_detection(tmp_path, monkeypatch):
    """A 3 s 25 fps swaying talking head: one detection a second crops what a detection on every frame crops."""
    from etser.features import video

    p = str(talking_head_video(tmp_path / "th.mp4", 480, 272, seconds=3.0))
    face = {**FACE, "detect_size": 160}
    boxes, crop = {}, video.Picture.crop
    for fps in (0, 1):
        seen = boxes[fps] = []
        monkeypatch.setattr(video.Picture, "crop", lambda self, box, size, seen=seen: seen.append(box) or crop(
            self, box, size))
        det = CountingHaar()
        frames, found = load_faces(p, "a", ALL, {**face, "detect_fps": fps}, det)
        assert found and frames.shape == (75, 64, 64, 3) and None not in seen
        assert det.calls == (75 if fps == 0 else 3)  # at 0, 1 and 2 s, not on each of the 75 frames
    iou = _iou(np.array(boxes[0], float), np.array(boxes[1], float))
    # measured 0.893 and 0.773 (the per-frame boxes themselves jitter by +-5 % as the mouth opens)
    assert iou.mean() > 0.85 and iou.min() > 0.7, (iou.mean(), iou.min())


def test_frames_before_the_first_face_take_its_box(tmp_path):
    rng = np.random.default_rng(0)
    blank = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 256, 0).repeat(3, 2)  # a ramp
    frames = [blank] * 15
    for t in range(15):
        frames.append(blank.copy())
        frames[-1][64:192, 64:192] = face_frame("happy", 0, t, 128, rng)
    p = str(write_mp4(tmp_path / "late.mp4", frames))  # the face appears at 1.5 s
    got, found = load_faces(p, "a", ALL, {**FACE, "detect_fps": 1})
    assert found and got.shape == (30, 64, 64, 3)
    decoded = list(sampled_frames(p, "all", None))
    first = HaarFaces().box(decoded[20])  # the first detection that finds it, at 2 s
    assert HaarFaces().box(decoded[10]) is None
    for k in (0, 14):  # cropped by that box, not kept as full frames
        assert np.abs(got[k].astype(float) - crop(decoded[k], first, 64)).mean() < 3  # colour conversion: ~2
        assert np.abs(got[k].astype(float) - crop(decoded[k], None, 64)).mean() > 5


def test_rotation_metadata_turns_frames_upright_and_is_recorded(tmp_path):
    upright = str(talking_head_video(tmp_path / "up.mp4", 320, 240, seconds=1.0, fps=10))
    turned = str(talking_head_video(tmp_path / "turned.mp4", 320, 240, seconds=1.0, fps=10, turn=90))
    notes = {}
    got, found = load_faces(turned, "a", ALL, FACE, notes=notes)
    want, _ = load_faces(upright, "a", ALL, FACE)
    assert found and notes == {"rotation": 90} and got.shape == want.shape == (10, 64, 64, 3)
    # the decoded frames are the upright ones, up to the encoder's loss (measured 0.35)
    a, b = next(sampled_frames(turned, "all", None)).astype(float), next(sampled_frames(upright, "all", None))
    assert a.shape == (240, 320, 3) and np.abs(a - b).mean() < 2


MEMORY = """
import sys
from etser.features.video import load_faces
frames, found = load_faces(sys.argv[1], "u", {"mode": "all"}, {"crop": "haar", "margin": 0.25, "min_size": 24,
                           "size": 32, "detect_size": 160, "detect_fps": 1, "no_face": "full_frame"})
assert not found and len(frames) == int(sys.argv[2]), len(frames)
# VmHWM: this process's own peak (ru_maxrss would carry the forking parent's peak across exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) // 1024)
"""


def _no_face_video(path, seconds: int, fps: int = 1):
    rng = np.random.default_rng(0)
    import cv2

    frames = [cv2.GaussianBlur(rng.integers(60, 200, (240, 320, 3), dtype=np.uint8), (0, 0), 3)]
    return write_mp4(path, [np.roll(frames[0], 3 * t, axis=1) for t in range(seconds * fps)], fps=fps)


def test_memory_of_a_long_no_face_video_is_that_of_a_short_one(tmp_path):
    """10 minutes at 320 x 240 (1 frame a second) against 10 seconds: no frame is held whole."""
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peak = {}
    for seconds in (10, 600):
        p = _no_face_video(tmp_path / f"{seconds}.mp4", seconds)
        r = subprocess.run([sys.executable, "-c", MEMORY, str(p), str(seconds)], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        peak[seconds] = int(r.stdout.split()[-1])
    # 600 decoded frames are 138 MB (the old code held them all: +271 MB at 2 frames/s); their 32 px crops 1.8 MB
    assert peak[600] - peak[10] < 40, peak


def test_stage2_excludes_an_audio_video_mismatch_and_lists_rotated_videos(tmp_path):
    from etser.datadir import read_table
    from etser.features.extract import merge, run_job
    from etser.features.upstream import load_config

    data = tmp_path / "data"
    data.mkdir()
    clip = face_video(tmp_path / "a.mp4", "happy", 0, n=10, size=128)  # 1 s
    turned = talking_head_video(tmp_path / "turned.mp4", 320, 240, seconds=1.0, fps=10, turn=270)
    (data / "video.scp").write_text(f"u1 {clip}\nu2 {clip}\nu3 {turned}\nu4 {clip}\n")
    (data / "utt2dur").write_text("u1 1.3\nu2 5.0\nu3 1.0\n")  # u4: no duration, not checked
    cfg = load_config(str(ROOT / "conf/upstream/visual_baseline.yaml"))
    out = tmp_path / "dump"
    run_job(cfg, data, out)
    meta = merge(cfg, data, out, nj=1)
    excluded = read_table(out / "excluded")
    assert excluded == {"u2": f"{clip}\taudio/video mismatch: the video lasts 1.00 s, the audio 5.00 s "
                              "(max_av_diff: 1 s)"}
    assert read_table(out / "rotated") == {"u3": f"{turned}\t270"} and meta["num_rotated"] == 1
    assert meta["num_utts"] == 3 and meta["num_no_face"] == 0
    with pytest.raises(RuntimeError, match=r"utterance u2 \(.*a.mp4\): audio/video mismatch"):
        run_job({**cfg, "on_bad_input": "fail"}, data, tmp_path / "dump_fail")
    run_job({**cfg, "max_av_diff": None}, data, tmp_path / "dump_unchecked")
    assert not read_table(tmp_path / "dump_unchecked" / "split1" / "excluded.1")


class Held:
    """Counts the objects of some kinds alive at once (crops, decoded frames, prepared pieces' frames): each is
    counted from its creation until it is freed, and the peak of each kind is kept."""

    def __init__(self):
        import threading

        self.now, self.peak, self.lock = {}, {}, threading.Lock()

    def track(self, kind: str, obj, count: int = 1):
        import weakref

        with self.lock:
            self.now[kind] = self.now.get(kind, 0) + count
            self.peak[kind] = max(self.peak.get(kind, 0), self.now[kind])
        weakref.finalize(obj, self._free, kind, count)
        return obj

    def _free(self, kind, count):
        with self.lock:
            self.now[kind] -= count


def _held_by_a_visual_job(monkeypatch, tmp_path, video, utt: str, ckpt) -> tuple[dict, int]:
    """Peak crops, decoded frames and prepared frames held at once by stage 2 on one video (a tiny CLIP
    vision model, pieces of 8 frames); and the frames dumped."""
    from etser.datadir import read_table
    from etser.features import video as vid
    from etser.features.extract import run_job
    from etser.features.upstream import load_config
    from etser.features.visual_encoders import build_visual_encoder

    held = Held()
    cfg = load_config({"modality": "visual", "name": "hf_image", "ckpt": str(ckpt), "batch": {"max_items": 8},
                       "face": {"size": 32}})
    encoder = build_visual_encoder(cfg)
    prepare = encoder.prepare
    encoder.prepare = lambda frames: held.track("prepared", prepare(frames), len(frames))
    data = tmp_path / f"data_{utt}"
    data.mkdir()
    (data / "video.scp").write_text(f"{utt} {video}\n")
    crop_, init_ = vid.Picture.crop, vid.Picture.__init__
    with monkeypatch.context() as m:
        m.setattr(vid.Picture, "crop", lambda self, box, size: held.track("crops", crop_(self, box, size)))
        m.setattr(vid.Picture, "__init__", lambda self, *a: (init_(self, *a), held.track("decoded", self))[0])
        run_job(cfg, data, tmp_path / f"dump_{utt}", upstream=encoder)
    frames = int(read_table(tmp_path / f"dump_{utt}" / "split1" / "utt2num_frames.1")[utt])
    return held.peak, frames


@pytest.mark.parametrize("face", [True, False], ids=["face", "no_face"])
def test_a_visual_job_holds_no_more_of_a_long_video_than_of_a_short_one(tmp_path, monkeypatch, face):
    """10 minutes against 10 seconds (160 x 120, 2 frames a second): the crops, decoded frames and prepared
    pixels a stage-2 job holds at once do not grow with the video (it held the whole video's crops and
    pixels)."""
    ckpt = tiny_image_model("clip", tmp_path / "clip")
    peak, frames = {}, {}
    for seconds in (10, 600):
        p = talking_head_video(tmp_path / f"{seconds}.mp4", 160, 120, seconds=seconds, fps=2, bit_rate=200_000,
                               face=face)
        peak[seconds], frames[seconds] = _held_by_a_visual_job(monkeypatch, tmp_path, p, f"s{seconds}", ckpt)
    assert frames == {10: 20, 600: 1200}
    for kind in ("crops", "decoded"):
        assert peak[600][kind] <= peak[10][kind], (kind, peak)
    # prepared pieces of 8 frames (measured 16 to 32, by timing): at most the one just encoded and the one
    # handed on in its place, the prefetch queue's two and the one the prefetch thread has just prepared
    assert peak[600]["prepared"] <= 5 * 8, peak


@pytest.mark.parametrize("kind", ["baseline", "clip", "videomae"])
def test_a_video_in_pieces_gives_the_features_of_the_whole_video(tmp_path, kind):
    """41 frames in pieces of at most 10 (VideoMAE: 2 clips of 4 frames, the last clip completed once, at the
    end) give the features of the 41 crops encoded at once."""
    import kaldiio
    import yaml

    from etser.datadir import read_table
    from etser.features.extract import run_job
    from etser.features.upstream import load_config
    from etser.features.visual_encoders import build_visual_encoder

    if kind == "baseline":
        user = yaml.safe_load((ROOT / "conf/upstream/visual_baseline.yaml").read_text())
    else:
        user = {"modality": "visual", "name": "hf_video" if kind == "videomae" else "hf_image",
                "ckpt": str(tiny_image_model(kind, tmp_path / kind)), "face": {"size": 48}}
    cfg = load_config({**user, "batch": {"max_items": 10}, "frames": {"layers": "all", "dtype": "float32"}})
    p = talking_head_video(tmp_path / "v.mp4", 160, 120, seconds=4.1, fps=10, bit_rate=200_000)
    data = tmp_path / "data"
    data.mkdir()
    (data / "video.scp").write_text(f"v {p}\n")
    run_job(cfg, data, tmp_path / "dump")
    got = kaldiio.load_mat(read_table(tmp_path / "dump" / "split1" / "frames.1.scp")["v"])
    enc = build_visual_encoder(cfg)
    crops, found = load_faces(str(p), "v", cfg["sampling"], cfg["face"])
    (want,) = enc.encode([enc.prepare(crops)])
    assert found and len(crops) == 41 and got.shape == (11 if kind == "videomae" else 41, want.shape[0] * want.shape[2])
    np.testing.assert_allclose(got, want.permute(1, 0, 2).reshape(got.shape[0], -1).numpy(), rtol=1e-4, atol=1e-5)

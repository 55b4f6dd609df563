"""Small synthetic face videos (H.264 MP4 through PyAV) whose expression carries a label.

A face ellipse with eyes, brows and a mouth; the mouth's curvature and openness and the brows' angle depend
on the expression, the skin colour, face size and position on the speaker; a little motion and noise per
frame.  64-128 px at 10 fps: enough for the Haar cascade and for the baseline features to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (mouth curvature: + smile / - frown, mouth openness, brow tilt: + inner end down)
EXPRESSIONS = {"happy": (1.0, 0.25, -0.2), "sad": (-0.9, 0.1, -0.8), "angry": (-0.3, 0.15, 1.0),
               "surprise": (0.0, 1.0, -1.0)}
SKINS = [(224, 188, 160), (198, 150, 110), (150, 105, 75), (236, 206, 180)]


def face_frame(expr: str, speaker: int, t: int, size: int = 96, rng=None) -> np.ndarray:
    """One RGB frame (size, size, 3) uint8."""
    import cv2

    rng = rng or np.random.default_rng(0)
    curve, opening, brow = EXPRESSIONS[expr]
    img = np.full((size, size, 3), (60 + 10 * speaker, 70, 90), np.uint8)
    scale = size / 96 * (0.85 + 0.05 * (speaker % 4))
    cx = size // 2 + int(2 * np.sin(t / 3)) + (speaker % 3) - 1
    cy = size // 2 + int(2 * np.cos(t / 4))
    ax, ay = int(30 * scale), int(38 * scale)
    cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, SKINS[speaker % len(SKINS)], -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex, ey = cx + side * int(12 * scale), cy - int(8 * scale)
        cv2.ellipse(img, (ex, ey), (int(6 * scale), int(3 * scale + 2 * max(opening - 0.5, 0))), 0, 0, 360,
                    (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, ey), max(1, int(2.5 * scale)), (30, 20, 20), -1, cv2.LINE_AA)
        inner, outer = ex - side * int(7 * scale), ex + side * int(7 * scale)
        by = ey - int(9 * scale)
        cv2.line(img, (inner, by + int(brow * 4 * scale)), (outer, by - int(brow * 4 * scale)), (50, 35, 30),
                 max(1, int(2 * scale)), cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy + int(4 * scale)), (int(4 * scale), int(6 * scale)), 0, 0, 360,
                tuple(int(c * 0.85) for c in SKINS[speaker % len(SKINS)]), -1, cv2.LINE_AA)  # nose
    my, mw = cy + int(20 * scale), int(12 * scale)
    pts = []
    for x in np.linspace(-1, 1, 15):
        pts.append((cx + int(x * mw), my - int(curve * 6 * scale * (1 - x * x)) + int(curve * 3 * scale)))
    top = np.array(pts, np.int32)
    bottom = np.array([(x, y + int(opening * 9 * scale * (1 - ((x - cx) / mw) ** 2))) for x, y in pts], np.int32)
    cv2.fillPoly(img, [np.concatenate([top, bottom[::-1]])], (120, 30, 40), cv2.LINE_AA)
    cv2.polylines(img, [top], False, (90, 20, 30), max(1, int(2 * scale)), cv2.LINE_AA)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def face_video(path, expr: str, speaker: int, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_mp4(path, [face_frame(expr, speaker, t, size, rng) for t in range(n)])


def blank_video(path, n: int = 8, size: int = 64) -> Path:
    """A video with no face in any frame (flat noise)."""
    rng = np.random.default_rng(1)
    return write_mp4(path, [rng.integers(100, 130, (size, size, 3), dtype=np.uint8) for _ in range(n)])


def audio_only_mp4(path) -> Path:
    """An MP4 with an AAC audio stream and no video stream."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def video_dataset(root: Path, per_class: int = 6, speakers: int = 3, size: int = 96, n: int = 10
                  ) -> tuple[Path, dict[str, str]]:
    """``root/data`` with video.scp of per_class videos per expression (over speakers); utt -> label."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    labels, rows = {}, []
    k = 0
    for expr in EXPRESSIONS:
        for i in range(per_class):
            spk = i % speakers
            utt = f"spk{spk}_{expr}_{i:02d}"
            face_video(root / "mp4" / f"{utt}.mp4", expr, spk, n=n, size=size, seed=k)
            rows.append(f"{utt} {root / 'mp4' / f'{utt}.mp4'}")
            labels[utt] = expr
            k += 1
    (data / "video.scp").write_text("\n".join(sorted(rows)) + "\n")
    return data, labels


def tiny_image_model(kind: str, path: str | Path, seed: int = 0) -> Path:
    """A randomly initialised Hugging Face image/video model dir (config, weights, preprocessor_config.json).

    kind: clip (CLIPVisionModel), dinov2 (Dinov2Model), data2vec (Data2VecVisionModel), videomae
    (VideoMAEModel, clips of 4 frames).  32 x 32 inputs, 2 layers of width 32.
    """
    import torch
    import transformers as T

    torch.manual_seed(seed)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                 patch_size=8)
    size, crop = {"shortest_edge": 32}, {"height": 32, "width": 32}
    if kind == "clip":
        model = T.CLIPVisionModel(T.CLIPVisionConfig(**small))
        proc = T.CLIPImageProcessor(size=size, crop_size=crop)
    elif kind == "dinov2":
        model = T.Dinov2Model(T.Dinov2Config(**small))
        proc = T.BitImageProcessor(size=size, crop_size=crop, do_convert_rgb=True)
    elif kind == "data2vec":
        model = T.Data2VecVisionModel(T.Data2VecVisionConfig(**small))
        proc = T.BeitImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    elif kind == "videomae":
        model = T.VideoMAEModel(T.VideoMAEConfig(**small, num_frames=4, tubelet_size=2))
        proc = T.VideoMAEImageProcessor(size=size, crop_size=crop)
    else:
        raise ValueError(kind)
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def talking_head_video(path, width: int = 1280, height: int = 720, seconds: float = 4.0, fps: int = 25,
                       bit_rate: int = 2_000_000, seed: int = 0, expr: str = "happy", face: bool = True,
                       turn: int = 0) -> Path:
    """An H.264 talking head at the release's kind of bitrate: a textured background and a face about half the
    frame's height that sways and talks (``face=False``: the background alone).  ``turn``: the frames are
    stored turned by -turn degrees and the display matrix says to turn them by +turn (a phone's rotation)."""
    import av
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(40, 200, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    side = int(height * 0.55) // 2 * 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = (turn // 90) % 4
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = (width, height) if k % 2 else (height, width)
        s.pix_fmt, s.bit_rate = "yuv420p", int(bit_rate)
        s.options = {"preset": "veryfast"}
        if k:
            s.set_display_rotation(90 * k)
        for t in range(int(round(seconds * fps))):
            img = bg.copy()
            if face:
                expr_t = expr if (t // 8) % 2 else "surprise"  # the mouth opens and closes as it talks
                x0 = width // 2 - side // 2 + int(0.04 * width * np.sin(t / 15))
                y0 = height // 2 - side // 2 + int(0.02 * height * np.cos(t / 20))
                img[y0:y0 + side, x0:x0 + side] = face_frame(expr_t, seed % 4, t, side, rng)
            img = np.ascontiguousarray(np.rot90(img, -k))
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path

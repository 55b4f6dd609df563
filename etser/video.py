"""Video input for the visual upstreams: PyAV decoding, frame sampling and face cropping.

``load_faces(path, utt, sampling, face)`` gives the sampled frames of one mp4 as face crops, a
``(T, size, size, 3)`` uint8 RGB array, and whether a face was found in any frame.  Face crops come from
(a) OpenFace-aligned images a user already has (``<openface_dir>/<utt>/*.bmp|png|jpg`` or
``<openface_dir>/<utt>.npy``), (b) OpenCV's Haar cascade shipped in ``opencv-python-headless``, or (c) no
crop (the full frame).  Frames are cropped and resized as they are decoded, so memory per video is the
crops, not the decoded frames.  Anything unreadable raises ``VideoError`` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg")


class VideoError(Exception):
    """An mp4 (or face image set) that gives no frames; the message names the file and the reason."""


def select_indices(n: int, mode: str, value: float | None, fps: float | None) -> list[int]:
    """Indices of the frames kept out of ``n``: all, ``value`` per second (nearest frame to each k/value s,
    needs ``fps``) or ``value`` uniformly spaced (first and last included; fewer frames are all kept)."""
    if n <= 0:
        return []
    if mode == "all":
        return list(range(n))
    if mode == "uniform":
        k = int(value)
        if n <= k:
            return list(range(n))
        return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))
    if mode == "fps":
        if not fps or fps <= 0:
            raise VideoError("the video has no frame rate, needed by sampling mode fps")
        times = np.arange(0.0, n / fps, 1.0 / float(value))
        return sorted(set(np.minimum((times * fps).round().astype(int), n - 1).tolist()))
    raise ValueError(f"unknown sampling mode {mode!r}")


def _open(path: str):
    import av

    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: not a readable video file ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def probe(path: str) -> tuple[int, float | None]:
    """(frame count from the container header, 0 when it does not say; average frame rate or None)."""
    container = _open(path)
    try:
        s = container.streams.video[0]
        return int(s.frames or 0), (float(s.average_rate) if s.average_rate else None)
    finally:
        container.close()


def iter_frames(path: str):
    """Every decoded frame of the first video stream as an RGB uint8 array (H, W, 3)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


def count_frames(path: str) -> int:
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


def sampled_frames(path: str, mode: str, value: float | None):
    """The sampled frames of an mp4, decoded once (twice in uniform mode when the header has no frame count)."""
    n, fps = probe(path)
    if mode == "all":
        wanted = None
    else:
        if n <= 0:
            n = count_frames(path)
        wanted = set(select_indices(n, mode, value, fps))
    got = 0
    for i, frame in enumerate(iter_frames(path)):
        if wanted is None or i in wanted:
            got += 1
            yield frame
    if got == 0:
        raise VideoError(f"{path}: no decodable frame")


class HaarFaces:
    """The largest frontal face per frame by OpenCV's Haar cascade (weights inside opencv-python-headless)."""

    def __init__(self, margin: float = 0.25, min_size: int = 24, detect_size: int = 240):
        import cv2

        xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(xml))
        if self.cascade.empty():
            raise VideoError(f"{xml}: the OpenCV Haar cascade could not be loaded (opencv-python-headless < 5 ships it)")
        self.margin, self.min_size, self.detect_size = float(margin), int(min_size), int(detect_size)

    def box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of a square around the largest face, enlarged by the margin, or None."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        # detection on a copy whose shorter side is at most detect_size: the cascade's cost grows with pixels
        scale = min(1.0, self.detect_size / min(gray.shape[:2]))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        side_min = max(8, int(round(self.min_size * scale)))
        faces = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=4,
                                              minSize=(side_min, side_min))
        if len(faces) == 0:
            return None
        x, y, w, h = (v / scale for v in max(faces, key=lambda f: f[2] * f[3]))
        side = int(round(max(w, h) * (1 + 2 * self.margin)))
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        return x0, y0, x0 + side, y0 + side


def crop(rgb: np.ndarray, box, size: int) -> np.ndarray:
    """The box of a frame (edge pixels repeated where it leaves the frame), resized to size x size."""
    import cv2

    if box is not None:
        x0, y0, x1, y1 = box
        h, w = rgb.shape[:2]
        pad = max(0, -x0, -y0, x1 - w, y1 - h)
        if pad:
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
        rgb = rgb[y0:y1, x0:x1]
    return cv2.resize(np.ascontiguousarray(rgb), (size, size), interpolation=cv2.INTER_AREA)


def openface_frames(openface_dir: str, utt: str) -> tuple[np.ndarray, str]:
    """OpenFace-aligned faces of one utterance: ``<dir>/<utt>.npy`` (T, H, W, 3) or images in ``<dir>/<utt>/``."""
    import cv2

    root = Path(openface_dir)
    npy = root / f"{utt}.npy"
    if npy.is_file():
        try:
            arr = np.load(npy)
        except (OSError, ValueError) as e:
            raise VideoError(f"{npy}: not a readable .npy stack ({e})") from None
        if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
            raise VideoError(f"{npy}: expected a (T, H, W, 3) face stack, got shape {arr.shape}")
        return arr.astype(np.uint8), str(npy)
    folder = root / utt
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not images:
        raise VideoError(f"{folder}: no OpenFace face images (.bmp/.png/.jpg) and no {npy.name}")
    frames = []
    for p in images:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoError(f"{p}: not a readable image")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames), str(folder)


def load_faces(path: str, utt: str, sampling: dict, face: dict, detector: HaarFaces | None = None
               ) -> tuple[np.ndarray, bool]:
    """Sampled, cropped frames ``(T, size, size, 3)`` uint8 and whether a face was found in any frame.

    Haar: a frame without a detection takes the nearest earlier box (the first box for leading frames);
    with no face in any frame the full frames are returned and the flag is False (the caller records it).
    """
    size, mode, value = int(face["size"]), sampling["mode"], sampling.get("value")
    if face["crop"] == "openface":
        stack, _ = openface_frames(face["openface_dir"], utt)
        fps = probe(path)[1] if mode == "fps" else None  # aligned faces are one per video frame
        idx = select_indices(len(stack), mode, value, fps)
        return np.stack([crop(stack[i], None, size) for i in idx]), True
    if face["crop"] == "none":
        return np.stack([crop(f, None, size) for f in sampled_frames(path, mode, value)]), True
    detector = detector or HaarFaces(face["margin"], face["min_size"], face.get("detect_size", 240))
    out: list[np.ndarray] = []
    raw: list[np.ndarray] = []  # frames before the first detection, kept whole until a box is known
    last = None
    for f in sampled_frames(path, mode, value):
        b = detector.box(f)
        last = b or last
        if last is None:
            raw.append(f)
            continue
        if raw:  # leading frames without a face take the first box
            out += [crop(r, last, size) for r in raw]
            raw = []
        out.append(crop(f, last, size))
    if last is None:
        return np.stack([crop(r, None, size) for r in raw]), False
    return np.stack(out), True

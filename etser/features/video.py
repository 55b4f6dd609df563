"""Video input for the visual upstreams: PyAV decoding, frame sampling and face cropping.

``iter_faces(path, utt, sampling, face)`` gives the sampled frames of one mp4 as face crops, ``(size, size,
3)`` uint8 RGB arrays one at a time in frame order (``load_faces`` stacks them); ``notes`` says whether a
face was found in any frame.  Face crops come from
(a) OpenFace-aligned images a user already has (``<openface_dir>/<utt>/*.bmp|png|jpg`` or
``<openface_dir>/<utt>.npy``), (b) OpenCV's Haar cascade shipped in ``opencv-python-headless``, or (c) no
crop (the full frame).  Frames stay in their decoded 4:2:0 planes, turned upright by their rotation
metadata; the cascade runs a few times a second on a small copy of the luma (the box interpolated between
detections) and only the crop is converted to RGB.  Memory per video is at most one detection interval of
decoded frames, whatever the video's length or content: crops are handed on as they are made.  Anything
unreadable raises ``VideoError`` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from etser.features.audio_info import not_a_regular_file

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

    try:
        what = not_a_regular_file(path)  # a named pipe or device is never opened: reading it blocks or never ends
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except OSError as e:
        raise VideoError(f"{path}: cannot be read ({e.strerror or e})") from None
    if what:
        raise VideoError(f"{path}: is {what}, not a video file (not opened)")
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


def duration(path: str) -> float | None:
    """Seconds of the video stream by its header (the container's when the stream does not say), or None."""
    container = _open(path)
    try:
        s = container.streams.video[0]
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if s.frames and s.average_rate:
            return float(s.frames / s.average_rate)
        return container.duration / 1e6 if container.duration else None
    finally:
        container.close()


def _decoded(path: str, threads: int = 0):
    """Every decoded ``av.VideoFrame`` of the first video stream (``threads``: decoder threads, 0 = FFmpeg's choice)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: the decoder is most of a visual job's time
        stream.thread_count = int(threads)
        yield from container.decode(stream)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


def iter_frames(path: str):
    """Every decoded frame of the first video stream as an upright RGB uint8 array (H, W, 3)."""
    for frame in _decoded(path):
        yield Picture(frame, path).rgb()


def count_frames(path: str) -> int:
    return sum(1 for _ in _decoded(path))


def quarter_turns(degrees: float, path: str) -> int:
    """Counter-clockwise quarter turns that make a frame upright from its display-matrix rotation."""
    k = round(degrees / 90)
    if abs(degrees - 90 * k) > 1:
        raise VideoError(f"{path}: rotation metadata of {degrees:g} degrees, not a multiple of 90")
    return k % 4


class Picture:
    """One decoded frame, upright (its rotation metadata applied), kept as the planes it was decoded to.

    4:2:0 frames stay Y/U/V planes: detection reads a downscaled luma plane and only a crop is converted to
    RGB, which costs a small fraction of converting the whole HD frame.  Other pixel formats are converted
    to RGB once.
    """

    def __init__(self, frame, path: str = "?"):
        self.turns = quarter_turns(frame.rotation or 0, path) if frame.rotation else 0
        w, h = frame.width, frame.height
        if frame.format.name in ("yuv420p", "yuvj420p") and w % 2 == 0 and h % 2 == 0:
            y, u, v = (np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:rows, :cols]
                       for p, rows, cols in zip(frame.planes, (h, h // 2, h // 2), (w, w // 2, w // 2)))
            self.luma, self.uv, self.rgb_full = y, (u, v), None
        else:
            self.luma, self.uv = None, None
            self.rgb_full = np.rot90(frame.to_ndarray(format="rgb24"), self.turns)
        self.frame = frame  # the planes are views of its buffers
        self.height, self.width = (w, h) if self.turns % 2 else (h, w)

    def _upright(self, plane: np.ndarray, y0, y1, x0, x1) -> np.ndarray:
        """[y0:y1, x0:x1] of a plane turned upright (a copy when turned: OpenCV mishandles negative strides)."""
        if not self.turns:
            return plane[y0:y1, x0:x1]
        return np.ascontiguousarray(np.rot90(plane, self.turns)[y0:y1, x0:x1])

    def gray(self, scale: float, x0: int = 0, y0: int = 0, x1: int | None = None, y1: int | None = None
             ) -> np.ndarray:
        """The upright grayscale frame (or its part [x0, x1) x [y0, y1)) resized by ``scale`` (<= 1), contiguous."""
        import cv2

        if self.luma is not None:
            g = self._upright(self.luma, y0, y1, x0, x1)
        else:
            g = cv2.cvtColor(np.ascontiguousarray(self.rgb_full[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(g)

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB pixels of the upright box [x0, x1) x [y0, y1), edge pixels repeated where it leaves the frame."""
        import cv2

        W, H = self.width, self.height
        ix0, iy0 = min(max(x0, 0), W - 1), min(max(y0, 0), H - 1)
        ix1, iy1 = max(min(x1, W), ix0 + 1), max(min(y1, H), iy0 + 1)
        if self.luma is None:
            rgb = self.rgb_full[iy0:iy1, ix0:ix1]
        else:
            # the smallest even-aligned block holding the box inside the frame, as 4:2:0 needs
            ex0, ey0, ex1, ey1 = ix0 & ~1, iy0 & ~1, min(W, (ix1 + 1) & ~1), min(H, (iy1 + 1) & ~1)
            y = self._upright(self.luma, ey0, ey1, ex0, ex1)
            u, v = (self._upright(p, ey0 // 2, ey1 // 2, ex0 // 2, ex1 // 2) for p in self.uv)
            rgb = cv2.cvtColorTwoPlane(np.ascontiguousarray(y), np.dstack([u, v]), cv2.COLOR_YUV2RGB_NV12)
            rgb = rgb[iy0 - ey0:iy1 - ey0, ix0 - ex0:ix1 - ex0]
        top, left, bottom, right = iy0 - y0, ix0 - x0, y1 - iy1, x1 - ix1
        if top > 0 or left > 0 or bottom > 0 or right > 0:
            rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), max(top, 0), max(bottom, 0), max(left, 0),
                                     max(right, 0), cv2.BORDER_REPLICATE)
        return rgb

    def rgb(self) -> np.ndarray:
        return np.ascontiguousarray(self.region(0, 0, self.width, self.height))

    def crop(self, box, size: int) -> np.ndarray:
        """The box (None: the whole frame) resized to size x size RGB."""
        import cv2

        x0, y0, x1, y1 = box if box is not None else (0, 0, self.width, self.height)
        inside = x0 >= 0 and y0 >= 0 and x1 <= self.width and y1 <= self.height
        if self.luma is not None and inside and size % 2 == 0:
            # resized as planes, then converted: the HD box is never converted to RGB whole (a third of the cost)
            ex0, ey0, ex1, ey1 = x0 & ~1, y0 & ~1, min(self.width, (x1 + 1) & ~1), min(self.height, (y1 + 1) & ~1)
            y = _shrink(self._upright(self.luma, ey0, ey1, ex0, ex1), size)
            u, v = (_shrink(self._upright(p, ey0 // 2, ey1 // 2, ex0 // 2, ex1 // 2), size // 2) for p in self.uv)
            return cv2.cvtColorTwoPlane(y, np.dstack([u, v]), cv2.COLOR_YUV2RGB_NV12)
        return cv2.resize(np.ascontiguousarray(self.region(x0, y0, x1, y1)), (size, size), interpolation=cv2.INTER_AREA)


def _shrink(img: np.ndarray, size: int) -> np.ndarray:
    """img resized to size x size by area averaging: first by the largest whole factor that leaves at least
    twice the size (OpenCV's fast path; at most factor - 1 edge rows and columns left out), then the rest."""
    import cv2

    k = min(img.shape[0], img.shape[1]) // (2 * size)
    if k >= 2:
        h, w = img.shape[0] // k * k, img.shape[1] // k * k
        oy, ox = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        img = cv2.resize(img[oy:oy + h, ox:ox + w], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def sampled_pictures(path: str, mode: str, value: float | None, threads: int = 0):
    """``(index, seconds, Picture)`` of the sampled frames of an mp4 (decoded twice in uniform mode when the
    header has no frame count).  Frames not sampled are decoded but never converted."""
    n, fps = probe(path)
    if mode == "all":
        wanted = None
    else:
        if n <= 0:
            n = count_frames(path)
        wanted = set(select_indices(n, mode, value, fps))
    got = 0
    for i, frame in enumerate(_decoded(path, threads)):
        if wanted is None or i in wanted:
            got += 1
            t = float(frame.time) if frame.time is not None else (i / fps if fps else float(i))
            yield got - 1, t, Picture(frame, path)
    if got == 0:
        raise VideoError(f"{path}: no decodable frame")


def sampled_frames(path: str, mode: str, value: float | None):
    """The sampled frames of an mp4 as upright RGB uint8 arrays (H, W, 3)."""
    for _, _, pic in sampled_pictures(path, mode, value):
        yield pic.rgb()


class HaarFaces:
    """The largest frontal face of a frame by OpenCV's Haar cascade (weights inside opencv-python-headless)."""

    def __init__(self, margin: float = 0.25, min_size: int = 24, detect_size: int = 240):
        import cv2

        xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(xml))
        if self.cascade.empty():
            raise VideoError(f"{xml}: the OpenCV Haar cascade could not be loaded (opencv-python-headless < 5 ships it)")
        self.margin, self.min_size, self.detect_size = float(margin), int(min_size), int(detect_size)

    def box(self, frame, near=None) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of a square around the largest face of an RGB array or a Picture, enlarged by the
        margin, or None.  ``near``: a box found earlier in the video; the face is first looked for around it
        at its size (a small image, few scales), then, if not there, in the whole frame."""
        import cv2

        if near is not None and isinstance(frame, Picture):
            found = self._near(frame, near)
            if found is not None:
                return found
        h, w = (frame.height, frame.width) if isinstance(frame, Picture) else frame.shape[:2]
        # detection on a copy whose shorter side is at most detect_size: the cascade's cost grows with pixels
        scale = min(1.0, self.detect_size / min(h, w))
        if isinstance(frame, Picture):
            gray = frame.gray(scale)
        else:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            if scale < 1.0:
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        side_min = max(8, int(round(self.min_size * scale)))
        return self._square(self._largest(gray, (side_min, side_min)), scale, 0, 0)

    def _near(self, pic: Picture, near) -> tuple[int, int, int, int] | None:
        face = (near[2] - near[0]) / (1 + 2 * self.margin)  # the face's side without the margin
        cx, cy = (near[0] + near[2]) / 2, (near[1] + near[3]) / 2
        x0, y0 = max(0, int(cx - 1.5 * face)), max(0, int(cy - 1.5 * face))
        x1, y1 = min(pic.width, int(cx + 1.5 * face)), min(pic.height, int(cy + 1.5 * face))
        scale = min(1.0, 40.0 / face)  # the face at about 40 px: 24 (the cascade's window) to 64 px searched
        gray = pic.gray(scale, x0, y0, x1, y1)
        lo, hi = int(0.6 * face * scale), int(1.6 * face * scale)
        if lo < 8 or min(gray.shape) < hi:
            return None
        return self._square(self._largest(gray, (lo, lo), (hi, hi)), scale, x0, y0)

    def _largest(self, gray: np.ndarray, side_min, side_max=None):
        import cv2

        faces = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=4,
                                              minSize=side_min, maxSize=side_max or (0, 0))
        return max(faces, key=lambda f: f[2] * f[3]) if len(faces) else None

    def _square(self, face, scale: float, ox: int, oy: int):
        if face is None:
            return None
        x, y, w, h = (v / scale for v in face)
        side = int(round(max(w, h) * (1 + 2 * self.margin)))
        cx, cy = ox + x + w / 2, oy + y + h / 2
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


def _between(a, b, f: float):
    """The box a fraction f of the way from box a to box b (a square stays a square)."""
    return tuple(int(round(p + (q - p) * f)) for p, q in zip(a, b))


def openface_frames(openface_dir: str, utt: str) -> tuple[int, Callable[[int], np.ndarray], str]:
    """OpenFace-aligned faces of one utterance, ``<dir>/<utt>.npy`` (T, H, W, 3) or images in ``<dir>/<utt>/``:
    (T, a function giving face i as an RGB array, where they are).  The stack is memory-mapped and an image
    read when asked for: a long utterance's faces are never all in memory."""
    import cv2

    root = Path(openface_dir)
    npy = root / f"{utt}.npy"
    if npy.is_file():
        try:
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise VideoError(f"{npy}: not a readable .npy stack ({e})") from None
        if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
            raise VideoError(f"{npy}: expected a (T, H, W, 3) face stack, got shape {arr.shape}")
        return len(arr), lambda i: np.asarray(arr[i]).astype(np.uint8), str(npy)
    folder = root / utt
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not images:
        raise VideoError(f"{folder}: no OpenFace face images (.bmp/.png/.jpg) and no {npy.name}")

    def image(i: int) -> np.ndarray:
        bgr = cv2.imread(str(images[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoError(f"{images[i]}: not a readable image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return len(images), image, str(folder)


def iter_faces(path: str, utt: str, sampling: dict, face: dict, detector: HaarFaces | None = None,
               notes: dict | None = None, threads: int = 0, no_face_frames: bool = True) -> Iterator[np.ndarray]:
    """The sampled frames of one video as crops ``(size, size, 3)`` uint8 RGB, one at a time in frame order.

    Haar: the cascade runs on ``face.detect_fps`` sampled frames a second (every sampled frame when 0); the
    box of a frame between two detections is interpolated between them, a frame after the last detection
    or after a miss keeps the last box, frames before the first detection take the first box.  With no
    face in any frame the full frames are given (``no_face_frames``; False: none at all).

    Memory, whatever the video's length or content: the frames since the last detection are held decoded
    (a second's worth at ``detect_fps: 1``), a crop is handed on as soon as its box is known, and frames
    before the first face (all of them in a video without one) are not kept: they are decoded again once
    the face is found (at the end, as full frames, when none is).  ``notes`` (a dict) receives, when the
    crops are done, ``face`` (whether a face was found), ``frames`` (sampled frames) and ``rotation``
    (degrees turned upright, 0 when none).
    """
    size, mode, value = int(face["size"]), sampling["mode"], sampling.get("value")
    notes = {} if notes is None else notes
    notes.update(face=True, frames=0, rotation=0)
    if face["crop"] == "openface":
        n, get, _ = openface_frames(face["openface_dir"], utt)
        fps = probe(path)[1] if mode == "fps" else None  # aligned faces are one per video frame
        for i in select_indices(n, mode, value, fps):
            notes["frames"] += 1
            yield crop(get(i), None, size)
        return

    def sampled(upto=None):
        for k, t, pic in sampled_pictures(path, mode, value, threads):
            if upto is not None and k >= upto:
                return
            if pic.turns:
                notes["rotation"] = 90 * pic.turns
            notes["frames"] = max(notes["frames"], k + 1)
            yield k, t, pic

    if face["crop"] == "none":
        for _, _, pic in sampled():
            yield pic.crop(None, size)
        return
    detector = detector or HaarFaces(face["margin"], face["min_size"], face.get("detect_size", 240))
    every = 1.0 / float(face["detect_fps"]) if face.get("detect_fps") else 0.0
    pending: list = []  # (k, Picture) since the last detection: uncropped, at most one detection interval
    last = None         # (k, box) of the last detection that found a face
    lead = 0            # frames before the first face: dropped, decoded again once it is found
    due = None          # time of the next detection

    def settle(upto_box=None, upto_k=None):
        """Crops of the pending frames: interpolated toward a new detection, else the last box."""
        for k, pic in pending:
            if last is not None and upto_box is not None:
                box = _between(last[1], upto_box, (k - last[0]) / (upto_k - last[0]))
            else:
                box = last[1] if last is not None else upto_box
            yield pic.crop(box, size)
        pending.clear()

    def again(box):
        """The lead frames decoded a second time, cropped with ``box`` (None: full frames)."""
        for _, _, pic in sampled(upto=lead):
            yield pic.crop(box, size)

    for k, t, pic in sampled():
        if due is not None and t < due - 1e-6:
            pending.append((k, pic))
            continue
        due = t + every if due is None or t >= due + every else due + every
        b = detector.box(pic, near=last[1] if last is not None else None)
        if b is None:
            if last is None:
                lead += len(pending) + 1
                pending.clear()
                continue
            yield from settle()
            yield pic.crop(last[1], size)
            continue
        if last is None and lead:
            yield from again(b)
        yield from settle(b, k)
        yield pic.crop(b, size)
        last = (k, b)
    if last is None:
        lead += len(pending)
        pending.clear()
        notes["face"] = False
        if no_face_frames:
            yield from again(None)
        return
    yield from settle()


def load_faces(path: str, utt: str, sampling: dict, face: dict, detector: HaarFaces | None = None,
               notes: dict | None = None, threads: int = 0) -> tuple[np.ndarray, bool]:
    """``iter_faces`` stacked: the sampled, cropped frames ``(T, size, size, 3)`` uint8 and whether a face was
    found in any frame (with none, the full frames).  ``notes`` receives ``rotation``.  For tests and
    tools: stage 2 streams ``iter_faces`` instead (memory bounded whatever the video's length)."""
    got: dict = {}
    frames = np.stack(list(iter_faces(path, utt, sampling, face, detector, got, threads)))
    if notes is not None:
        notes["rotation"] = got["rotation"]
    return frames, got["face"]

"""The visual modality: the utterances' videos (``data/<set>/video.scp``), sampled, face-cropped
(etser.features.video) and encoded per frame or per clip (etser.features.visual_encoders: ``hf_image``,
``hf_video``, ``timm_image``, ``face_features``).

A video that cannot be read (missing, corrupt, no video stream or decodable frame; with ``face.no_face:
exclude``, no face in any frame) or that lasts more than ``max_av_diff`` seconds longer or shorter than its
audio (``utt2dur``) is a bad input.  Videos with no face found that fall back to the full frame are listed in
``<dir>/no_face``, videos turned upright by their rotation metadata in ``<dir>/rotated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from etser.features.modality import BadInput, EncoderModality, UpstreamError, number, register

_FRAMES = {"layers": None, "dtype": "float16"}


class Visual(EncoderModality):
    name = "visual"
    input_table = "video.scp"
    prefetch_depth = 2  # a prepared piece is up to batch.max_items frames' pixel tensors (~0.6 MB per 224 px frame)
    model_names = ("hf_image", "hf_video", "timm_image", "face_features")
    defaults = {
        "modality": "visual",
        "name": None,               # hf_image (per frame), hf_video (clips, VideoMAE), timm_image or face_features
        "ckpt": None,
        "factory": None,
        "args": {},
        "download": None,
        "sampling": {"mode": "all", "value": None},  # all | fps (value frames per second) | uniform (value frames)
        "face": {
            "crop": "haar",          # haar (OpenCV cascade), openface (aligned faces a user has) or none
            "openface_dir": None,    # <dir>/<utt>/*.bmp|png|jpg or <dir>/<utt>.npy, for crop: openface
            "margin": 0.25,          # box enlarged by this fraction on each side (haar)
            "min_size": 24,          # smallest face side in pixels (haar)
            "detect_size": 160,      # haar runs on a copy whose shorter side is at most this (speed); faces
                                     # under 24 / detect_size of the shorter side are not found
            "detect_fps": 1,         # haar detections per second of video, the box interpolated between them;
                                     # 0: every sampled frame (an order of magnitude slower on HD video)
            "no_face": "full_frame",  # full_frame (recorded in <dir>/no_face) or exclude
            "size": 224,             # crops are resized to size x size before the encoder's own processor
        },
        "max_av_diff": 1.0,         # seconds the video may last longer or shorter than the audio (utt2dur); null: unchecked
        "dtype": "float32",
        "on_bad_input": "exclude",
        "batch": {"max_items": 32},
        "frames": dict(_FRAMES),
    }

    def check(self, cfg, where):
        s, f = cfg["sampling"], cfg["face"]
        if s["mode"] not in ("all", "fps", "uniform"):
            raise UpstreamError(f"{where}: sampling.mode must be all, fps or uniform")
        if s["mode"] != "all" and not (number(s, "value", "sampling", where) > 0):
            raise UpstreamError(f"{where}: sampling.value must be > 0 for mode {s['mode']}")
        if f["crop"] not in ("haar", "openface", "none"):
            raise UpstreamError(f"{where}: face.crop must be haar, openface or none")
        if f["crop"] == "openface" and not f["openface_dir"]:
            raise UpstreamError(f"{where}: face.crop openface needs face.openface_dir")
        if f["no_face"] not in ("full_frame", "exclude"):
            raise UpstreamError(f"{where}: face.no_face must be full_frame or exclude")
        if number(f, "detect_fps", "face", where) < 0 or number(f, "detect_size", "face", where, int) < 24:
            raise UpstreamError(f"{where}: face.detect_fps must be >= 0 and face.detect_size >= 24")
        if cfg["max_av_diff"] is not None and not number(cfg, "max_av_diff", "config", where) >= 0:
            raise UpstreamError(f"{where}: max_av_diff must be null or >= 0 seconds")

    def check_ckpt(self, cfg):
        if cfg.get("name") != "timm_image" or not cfg.get("ckpt"):
            return False  # hf_* directories: the generic check
        from etser.features.upstream import check_hf_dir

        check_hf_dir(Path(cfg["ckpt"]), cfg, ("config.json", "model.safetensors"))  # a timm hub folder
        return True

    def build(self, cfg, device):
        from etser.features.visual_encoders import build_visual_encoder

        return build_visual_encoder(cfg, device)

    def loaded(self, cfg, encoder, job):
        """``(Piece, item | BadInput)``: the job's videos in pieces of at most ``batch.max_items`` frames, cut
        and prepared in a background thread a few pieces ahead (see ``pieces``)."""
        from etser.features.dumpio import prefetch

        def prepare(piece):
            if piece.bad is not None:
                return piece.bad
            frames, piece.frames = piece.frames, None  # the crops are gone once prepared
            try:
                return encoder.prepare(frames)
            except Exception as e:  # e.g. an image processor failing on this input
                raise RuntimeError(f"{job.where(piece.utt)}: preparing the input failed: {type(e).__name__}: {e}") from e

        return prefetch(pieces(cfg, encoder, job), prepare, self.depth(job))

    def encoded(self, cfg, encoder, loaded):
        """Whole videos of at most ``batch.max_items`` frames share a forward; a longer video's pieces are
        encoded one a forward and joined along time (the forwards stage 2 ran when it held whole videos)."""
        import torch

        max_items = int(cfg["batch"]["max_items"])
        batch: list = []  # (utt, item, notes) of whole videos
        parts: list = []  # outputs of the pieces so far of the video being encoded

        def flush():
            if batch:
                for (utt, _, notes), x in zip(batch, encoder.encode([b[1] for b in batch])):
                    yield utt, x, notes
                batch.clear()

        for piece, got in loaded:
            if isinstance(got, BadInput):
                yield from flush()
                parts.clear()  # a video that failed after some of its pieces: they are dropped with it
                yield piece.utt, got, {}
            elif piece.first and piece.last:
                if batch and sum(encoder.size(b[1]) for b in batch) + encoder.size(got) > max_items:
                    yield from flush()
                batch.append((piece.utt, got, piece.notes))
            else:
                yield from flush()
                parts += encoder.encode([got])
                if piece.last:
                    yield piece.utt, torch.cat(parts, dim=1), piece.notes
                    parts.clear()
        yield from flush()

    def axis(self, cfg):
        return "clips" if cfg.get("name") == "hf_video" else "frames"

    def frame_rate(self, cfg):
        return cfg["sampling"]["value"] if cfg["sampling"]["mode"] == "fps" else None

    def summary(self, stats, lists):
        return [f"{len(lists['no_face'])} without a face (full frame)"]


@dataclass
class Piece:
    """Consecutive crops of one video (``frames``, (n, size, size, 3) uint8), whether they are its first and
    last, and the video's notes (with the last piece); or the video's ``bad`` input."""

    utt: str
    frames: np.ndarray | None = None
    first: bool = True
    last: bool = True
    notes: dict = field(default_factory=dict)
    bad: BadInput | None = None


def pieces(cfg: dict, encoder, job) -> Iterator[Piece]:
    """The job's videos as pieces in order: crops streamed from the decoder and cut every ``batch.max_items``
    frames (a whole number of the encoder's ``clip_frames``, its frames per output step, 1 by default), so
    that no more than a piece of crops is held whatever the video's length.  A piece is handed on once the
    next crop shows it is not the last; a video that turns out bad is a ``Piece`` with ``bad`` (after any of
    its pieces already handed on)."""
    from etser.features.video import HaarFaces, VideoError, duration, iter_faces

    face, tolerance = cfg["face"], cfg.get("max_av_diff")
    detector = HaarFaces(face["margin"], face["min_size"], face["detect_size"]) if face["crop"] == "haar" else None
    unit = max(1, int(getattr(encoder, "clip_frames", 1)))
    step = max(1, int(cfg["batch"]["max_items"]) // unit) * unit
    exclude = face["no_face"] == "exclude"
    audio_seconds = _audio_seconds(job.data / "utt2dur")
    for utt in job.order:
        path = job.table[utt]
        try:
            if tolerance is not None and utt in audio_seconds:
                seconds = duration(path)
                if seconds is not None and abs(seconds - audio_seconds[utt]) > float(tolerance):
                    yield Piece(utt, bad=BadInput(f"audio/video mismatch: the video lasts {seconds:.2f} s, the "
                                                  f"audio {audio_seconds[utt]:.2f} s (max_av_diff: {float(tolerance):g} s)"))
                    continue
            notes: dict = {}
            crops: list = []
            held, first = None, True
            for c in iter_faces(path, utt, cfg["sampling"], face, detector, notes, job.num_threads,
                                no_face_frames=not exclude):
                if held is not None:
                    yield Piece(utt, held, first, False)
                    held, first = None, False
                crops.append(c)
                if len(crops) == step:
                    held, crops = np.stack(crops), []
            if not notes["face"] and exclude:
                yield Piece(utt, bad=BadInput(f"no face: no face found in any of {notes['frames']} sampled frames "
                                              "(face.no_face: exclude)"))
                continue
            yield Piece(utt, held if held is not None else np.stack(crops), first, True,
                        {"no_face": 0 if notes["face"] else notes["frames"], "rotated": notes["rotation"]})
        except VideoError as e:
            yield Piece(utt, bad=BadInput(f"unreadable video: {e}"))
        except Exception as e:
            raise RuntimeError(f"{job.where(utt)}: preparing the input failed: {type(e).__name__}: {e}") from e


def _audio_seconds(path: Path) -> dict[str, float]:
    """utt2dur (stage 1 writes it) as numbers; {} without one (video durations then go unchecked)."""
    from etser.datadir import read_table

    if not path.is_file():
        return {}
    out = {}
    for utt, v in read_table(path).items():
        try:
            out[utt] = float(v)
        except ValueError:
            raise RuntimeError(f"{path}: utterance {utt}: duration {v!r} is not a number") from None
    return out


register(Visual())

"""The visual modality: the utterances' videos (``data/<set>/video.scp``), sampled, face-cropped
(etser.features.video) and encoded per frame or per clip (etser.features.visual_encoders: ``hf_image``,
``hf_video``, ``timm_image``, ``face_features``).

A video that cannot be read (missing, corrupt, no video stream or decodable frame; with ``face.no_face:
exclude``, no face in any frame) or that lasts more than ``max_av_diff`` seconds longer or shorter than its
audio (``utt2dur``) is a bad input.  Videos with no face found that fall back to the full frame are listed in
``<dir>/no_face``, videos turned upright by their rotation metadata in ``<dir>/rotated``.
"""

from __future__ import annotations

from pathlib import Path

from etser.features.modality import BadInput, EncoderModality, UpstreamError, number, register

_FRAMES = {"layers": None, "dtype": "float16"}


class Visual(EncoderModality):
    name = "visual"
    input_table = "video.scp"
    prefetch_depth = 2  # a prepared video is its frames' pixel tensors (~0.6 MB per 224 px frame): few ahead
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

    def loader(self, cfg, encoder, job):
        from etser.features.video import HaarFaces, VideoError, duration, load_faces

        face, tolerance = cfg["face"], cfg.get("max_av_diff")
        detector = HaarFaces(face["margin"], face["min_size"], face["detect_size"]) if face["crop"] == "haar" else None
        audio_seconds = _audio_seconds(job.data / "utt2dur")
        table = job.table

        def load(utt):
            notes: dict = {}
            try:
                if tolerance is not None and utt in audio_seconds:
                    seconds = duration(table[utt])
                    if seconds is not None and abs(seconds - audio_seconds[utt]) > float(tolerance):
                        return BadInput(f"audio/video mismatch: the video lasts {seconds:.2f} s, the audio "
                                        f"{audio_seconds[utt]:.2f} s (max_av_diff: {float(tolerance):g} s)")
                frames, found = load_faces(table[utt], utt, cfg["sampling"], face, detector, notes, job.num_threads)
            except VideoError as e:
                return BadInput(f"unreadable video: {e}")
            if not found and face["no_face"] == "exclude":
                return BadInput(f"no face: no face found in any of {len(frames)} sampled frames (face.no_face: exclude)")
            return encoder.prepare(frames), {"no_face": 0 if found else len(frames), "rotated": notes.get("rotation", 0)}
        return load

    def full(self, cfg, encoder, batch, item):
        return sum(encoder.size(b[1]) for b in batch) + encoder.size(item) > int(cfg["batch"]["max_items"])

    def encode(self, cfg, encoder, items):
        """Pieces of many videos share a forward up to batch.max_items frames; a long video is cut in pieces."""
        import torch

        max_items = int(cfg["batch"]["max_items"])
        flat = [(i, p) for i, item in enumerate(items) for p in _pieces(encoder, item, max_items)]
        outs_flat, group = [], []
        for entry in flat:
            if group and sum(encoder.size(p) for _, p in group) + encoder.size(entry[1]) > max_items:
                outs_flat += encoder.encode([p for _, p in group])
                group = []
            group.append(entry)
        outs_flat += encoder.encode([p for _, p in group])
        return [torch.cat([o for (i, _), o in zip(flat, outs_flat) if i == k], dim=1) for k in range(len(items))]

    def axis(self, cfg):
        return "clips" if cfg.get("name") == "hf_video" else "frames"

    def frame_rate(self, cfg):
        return cfg["sampling"]["value"] if cfg["sampling"]["mode"] == "fps" else None

    def summary(self, stats, lists):
        return [f"{len(lists['no_face'])} without a face (full frame)"]


def _pieces(encoder, item, max_items: int) -> list:
    """A long video split along its first axis so that no forward sees more than max_items frames."""
    n = encoder.size(item)
    if n <= max_items or not hasattr(item, "shape") or item.shape[0] < 2:
        return [item]
    step = max(1, max_items * item.shape[0] // n)
    return [item[i:i + step] for i in range(0, item.shape[0], step)]


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

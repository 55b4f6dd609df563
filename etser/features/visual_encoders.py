"""Visual upstreams: face crops of a video -> hidden states of every layer over time, (L, T, D).

Built-in encoders (``name:`` in a ``modality: visual`` config), or ``factory:`` for your own:

- ``hf_image``: a local Hugging Face image model run per frame (CLIPVisionModel or CLIPModel's vision tower,
  Dinov2Model, Data2VecVisionModel, ...); the sampled frames are the time axis.  What is taken (``args``):
  ``token``: ``cls`` (default), ``mean`` or ``sum`` over all tokens (CLS included) of each layer;
  ``layers``: ``all`` (default: embeddings + every layer) or ``last`` (the last hidden state, L = 1);
  ``output: image_embeds``: CLIP's projected image embedding (``get_image_features``, L = 1; a CLIPModel
  folder).  The official EmotionTalk/MERBench extractor takes ``image_embeds`` for CLIP and the ``last``
  layer's token ``sum`` for DINOv2 and data2vec (``extract_vision_huggingface.py``).
- ``hf_video``: a clip model (VideoMAEModel): consecutive clips of ``num_frames`` (16) frames, the last one
  completed by repeating its final frame; per layer the mean over tokens; clips are the time axis.
- ``timm_image``: a local timm checkpoint folder (the hub's ``config.json`` + ``model.safetensors``, e.g.
  ``timm/eva02_base_patch14_224.mim_in22k``) run per frame as the official extractor does:
  ``timm.create_model(args.model, num_classes=0)`` with the folder's weights, timm's own evaluation transform,
  and the model's pooled output (L = 1); other ``args`` go to ``create_model``.
- ``face_features``: no download; per frame of the face crop, in grayscale at ``args.size`` (48) px:
  z-scored pixels downsampled to 12x12, OpenCV HOG, and intensity mean/std of the eye, nose and mouth bands.
  L = 1.

An encoder has ``prepare(frames (T, H, W, 3) uint8) -> item`` (run in the prefetch thread), ``size(item)``
(frames, for batching), ``encode(items) -> [(L, T', D) float32 tensor]`` and ``info``.  Stage 2 streams a
video through it: ``prepare`` gets consecutive pieces of at most ``batch.max_items`` frames, in order, and
the outputs are joined along time; ``clip_frames`` (1 when absent) is the number of consecutive frames one
output step needs (a piece is a whole number of them; only the last piece may end with a partial clip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etser.features.upstream import UpstreamError, check_hf_dir, load_factory


def _per_item(x, items: list) -> list:
    """Split a batch's (L, N, D) output back into the items it was concatenated from (along dim 1)."""
    res, pos = [], 0
    for it in items:
        res.append(x[:, pos:pos + it.shape[0]])
        pos += it.shape[0]
    return res


def _dtype(name: str, device: str):
    import torch

    if name == "float16" and not str(device).startswith("cuda"):
        raise UpstreamError("dtype float16 needs a CUDA device (--ngpu 1); use bfloat16 or float32 on CPU")
    return getattr(torch, name)


class _FrameBatches:
    """What the pixel encoders share: an item is one utterance's pixels (frames or clips first), and a batch is
    the items concatenated on the model's device; an image item's size for batching is its frame count."""

    @staticmethod
    def size(item) -> int:
        return int(item.shape[0])

    def pixels(self, items: list):
        import torch

        return torch.cat(items).to(self.device, self.dtype)


class HFImageEncoder(_FrameBatches):
    """Per-frame hidden states of a local Hugging Face image model (CLS, token mean or sum per layer; or
    CLIP's projected image embedding)."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoModel

        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg)
        transformers.utils.logging.disable_progress_bar()
        args = {"token": "cls", "layers": "all", "output": "hidden_states", **cfg["args"]}
        for key, allowed in (("token", ("cls", "mean", "sum")), ("layers", ("all", "last")),
                             ("output", ("hidden_states", "image_embeds"))):
            if args[key] not in allowed:
                raise UpstreamError(f"hf_image: args.{key} must be one of {', '.join(allowed)}, got {args[key]!r}")
        self.token, self.layers, self.output = args.pop("token"), args.pop("layers"), args.pop("output")
        if self.output == "image_embeds" and (self.token, self.layers) != ("cls", "all"):
            raise UpstreamError("hf_image: args.token and args.layers do not apply to output: image_embeds")
        self.device = torch.device(device)
        self.dtype = _dtype(cfg["dtype"], device)
        self.processor = AutoImageProcessor.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=self.dtype, **args)
        if self.output == "image_embeds":
            if not callable(getattr(model, "get_image_features", None)):
                raise UpstreamError(f"hf_image: output image_embeds needs a model with get_image_features (a "
                                    f"CLIPModel folder), {path} holds a {type(model).__name__}")
            self.model = model.to(self.device).eval()
        else:
            # CLIPModel / ChineseCLIPModel hold text and vision towers: only the vision tower is run
            self.model = getattr(model, "vision_model", model).to(self.device).eval()
        self.info = {"model_class": type(self.model).__name__, "token": self.token, "layers": self.layers,
                     "output": self.output}

    def prepare(self, frames: np.ndarray):
        return self.processor(images=list(frames), return_tensors="pt")["pixel_values"]

    def encode(self, items: list) -> list:
        import torch

        pixels = self.pixels(items)
        with torch.inference_mode():
            if self.output == "image_embeds":
                emb = self.model.get_image_features(pixel_values=pixels)
                # transformers 5 returns the vision output with the projection as pooler_output
                emb = getattr(emb, "pooler_output", emb)
                x = emb.float()[None]  # (1, N, D)
            else:
                out = self.model(pixel_values=pixels, output_hidden_states=True)
                states = out.hidden_states if self.layers == "all" else out.hidden_states[-1:]
                hs = torch.stack([h.float() for h in states])  # (L, N, tokens, D)
                x = {"cls": lambda: hs[:, :, 0], "mean": lambda: hs.mean(dim=2), "sum": lambda: hs.sum(dim=2)}[
                    self.token]()  # (L, N, D)
        x = x.cpu()
        return _per_item(x, items)


class HFVideoEncoder(_FrameBatches):
    """Clip-level hidden states of a local Hugging Face video model (VideoMAE): clips are the time axis."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoModel

        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg)
        transformers.utils.logging.disable_progress_bar()
        self.device = torch.device(device)
        self.dtype = _dtype(cfg["dtype"], device)
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=self.dtype, **cfg["args"]).to(self.device).eval()
        self.clip = self.clip_frames = int(getattr(self.model.config, "num_frames", 16))
        self.info = {"model_class": type(self.model).__name__, "clip_frames": self.clip}

    def prepare(self, frames: np.ndarray):
        n = -(-len(frames) // self.clip) * self.clip
        frames = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)]) if n > len(frames) else frames
        clips = [list(frames[i:i + self.clip]) for i in range(0, n, self.clip)]
        return self.processor(clips, return_tensors="pt")["pixel_values"]  # (clips, clip, 3, H, W)

    @staticmethod
    def size(item) -> int:
        return int(item.shape[0] * item.shape[1])

    def encode(self, items: list) -> list:
        import torch

        pixels = self.pixels(items)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels, output_hidden_states=True)
        x = torch.stack([h.float().mean(dim=1) for h in out.hidden_states]).cpu()  # (L, clips, D)
        return _per_item(x, items)


class TimmImageEncoder(_FrameBatches):
    """The pooled output of a timm image model per frame (EVA-02 as the official extractor runs it)."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import json

        import timm
        import torch

        path = Path(cfg["ckpt"])
        check_hf_dir(path, cfg, ("config.json",))
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise UpstreamError(f"timm_image: {weights.resolve()} not found; copy every file of "
                                f"{cfg.get('download') or 'the timm model repository'}")
        args = dict(cfg["args"])
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        name = args.pop("model", None) or meta.get("architecture")
        if not name:
            raise UpstreamError(f"timm_image: no model name (args.model, or 'architecture' in {path}/config.json)")
        self.device = torch.device(device)
        self.dtype = _dtype(cfg["dtype"], device)
        # the folder's weights, never the network (pretrained_cfg_overlay points timm at the local file)
        model = timm.create_model(name, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"file": str(weights)}, **args)
        self.model = model.to(self.device, self.dtype).eval()
        self.transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
        self.info = {"model_class": type(model).__name__, "timm_model": name, "output": "pooled"}

    def prepare(self, frames: np.ndarray):
        import torch
        from PIL import Image

        return torch.stack([self.transform(Image.fromarray(np.ascontiguousarray(f))) for f in frames])

    def encode(self, items: list) -> list:
        import torch

        pixels = self.pixels(items)
        with torch.inference_mode():
            x = self.model(pixels).float()[None].cpu()  # (1, N, D)
        return _per_item(x, items)


class FaceFeatureEncoder:
    """No-download baseline: downsampled pixels, HOG and band statistics of the grayscale face crop."""

    def __init__(self, cfg: dict, device: str = "cpu"):
        import cv2

        a = {"size": 48, "pixels": 12, **cfg["args"]}
        if set(a) - {"size", "pixels"}:
            raise UpstreamError(f"face_features: unknown args {sorted(set(a) - {'size', 'pixels'})}")
        self.size_px, self.pixels = int(a["size"]), int(a["pixels"])
        if self.size_px % 16:
            raise UpstreamError("face_features: args.size must be a multiple of 16 (HOG blocks)")
        s = self.size_px
        self.hog = cv2.HOGDescriptor((s, s), (16, 16), (8, 8), (8, 8), 9)
        self.info = {"size": s, "pixels": self.pixels}

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        s, feats = self.size_px, []
        for f in frames:
            g = cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), (s, s),
                           interpolation=cv2.INTER_AREA)
            z = g.astype(np.float32)
            z = (z - z.mean()) / (z.std() + 1e-3)  # skin tone and lighting out
            small = cv2.resize(z, (self.pixels, self.pixels), interpolation=cv2.INTER_AREA).ravel()
            hog = self.hog.compute(g).ravel()
            bands = [z[int(s * a):int(s * b)] for a, b in ((0.2, 0.45), (0.45, 0.65), (0.65, 0.9))]
            stats = np.array([v for band in bands for v in (band.mean(), band.std())], dtype=np.float32)
            feats.append(np.concatenate([small, hog, stats]))
        return np.stack(feats).astype(np.float32)

    @staticmethod
    def size(item) -> int:
        return int(item.shape[0])

    def encode(self, items: list) -> list:
        import torch

        return [torch.from_numpy(it).unsqueeze(0) for it in items]


def build_visual_encoder(cfg: dict, device: str = "cpu"):
    if cfg["factory"]:
        enc = load_factory(cfg["factory"])(**cfg["args"])
        for attr in ("prepare", "encode", "size"):
            if not callable(getattr(enc, attr, None)):
                raise UpstreamError(f"factory {cfg['factory']}: a visual encoder needs prepare(), encode() and size()")
        return enc
    return {"hf_image": HFImageEncoder, "hf_video": HFVideoEncoder, "timm_image": TimmImageEncoder,
            "face_features": FaceFeatureEncoder}[cfg["name"]](cfg, device)

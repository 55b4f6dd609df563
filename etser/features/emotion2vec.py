"""emotion2vec and emotion2vec+ (Ma et al. 2024) as speech upstreams, from the folders users download.

``factory: etser.features.emotion2vec:build`` with ``args: {ckpt: <folder>}``.  The folder is FunASR's / ModelScope's
(``iic/emotion2vec_base``, ``iic/emotion2vec_plus_base``, ``iic/emotion2vec_plus_large``) or its Hugging Face
mirror (``emotion2vec/emotion2vec_plus_base`` ...): ``config.yaml`` (``model: Emotion2vec`` and its
``model_conf``), the weights ``model.pt`` (the file ``configuration.json`` names, when there is one) and, for
the + models, ``tokens.txt`` (the labels of their classifier, not used here).

Why not ``funasr`` itself: ``pip install funasr`` brings 19 more packages (ModelScope and its hub client,
Aliyun OSS and KMS SDKs, umap-learn, tiktoken, ...) into an environment that runs no FunASR model, and its
``AutoModel`` resolves names on the ModelScope hub.  The network here is FunASR's ``Emotion2vec`` (a data2vec
2.0 audio model) at inference, written with torch alone and with FunASR's module names, so its ``model.pt``
loads key for key: a conv feature encoder (320 samples per frame, 50 frames/s), a projection, a convolutional
relative position encoder, ``num_extra_tokens`` learned tokens, ALiBi-biased post-LN transformer blocks
(``prenet_depth`` in the modality encoder, then ``depth``).  The waveform is layer-normalised over the whole
utterance first when ``model_conf.normalize`` is true (as FunASR's ``inference`` does).

Hidden states (``1 + prenet_depth + depth``, the extra tokens left out): the block input (projected features
plus positions, after the modality encoder's LayerNorm), then the output of every block; the last one is
FunASR's ``extract_features(...)["x"]``, whose time-mean is the official utterance embedding.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE = 16000
# Keys of a FunASR checkpoint that inference does not use: the pretraining decoder, the classifier of the +
# models (their 9 labels), EMA teacher copies.
_UNUSED = ("modality_encoders.AUDIO.decoder.", "proj.", "_ema.", "ema.", "target_proj.",
           "modality_encoders.AUDIO.encoder_mask")


class _Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(-2, -1)


class _Fp32LayerNorm(nn.LayerNorm):
    def forward(self, x):
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class _Fp32GroupNorm(nn.GroupNorm):
    def forward(self, x):
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type_as(x)


class _SamePad(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x):
        return x[:, :, :-self.remove] if self.remove else x


class _ConvEncoder(nn.Module):
    """The waveform encoder: conv (no bias), dropout, norm, GELU per layer (fairseq's names and indices)."""

    def __init__(self, spec: list[tuple[int, int, int]], mode: str):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        c_in = 1
        for i, (dim, k, stride) in enumerate(spec):
            conv = nn.Conv1d(c_in, dim, k, stride=stride, bias=False)
            if mode == "layer_norm":
                norm = nn.Sequential(_Transpose(), _Fp32LayerNorm(dim, elementwise_affine=True), _Transpose())
                self.conv_layers.append(nn.Sequential(conv, nn.Dropout(0.0), norm, nn.GELU()))
            elif i == 0:  # "default": a GroupNorm on the first layer only
                self.conv_layers.append(nn.Sequential(conv, nn.Dropout(0.0), _Fp32GroupNorm(dim, dim), nn.GELU()))
            else:
                self.conv_layers.append(nn.Sequential(conv, nn.Dropout(0.0), nn.GELU()))
            c_in = dim

    def forward(self, wav):  # (B, n) -> (B, C, T)
        x = wav.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, alibi_bias):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if alibi_bias is not None:
            attn = attn.type_as(alibi_bias)
            attn[:, :alibi_bias.size(1)] += alibi_bias
        attn = attn.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """data2vec 2.0's AltBlock, post-LN (``layer_norm_first: false``, every emotion2vec model), at inference."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, affine: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, alibi_bias):
        x = self.norm1(x + self.attn(x, alibi_bias))
        return self.norm2(x + self.mlp(x))


class _BlockEncoder(nn.Module):
    def __init__(self, blocks: list[nn.Module], norm: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm


class _AudioEncoder(nn.Module):
    def __init__(self, a: dict, dim: int, make_block, make_norm):
        super().__init__()
        spec = parse_conv_spec(a["feature_encoder_spec"])
        self.local_encoder = _ConvEncoder(spec, a.get("extractor_mode", "layer_norm"))
        self.project_features = nn.Sequential(_Transpose(), nn.LayerNorm(spec[-1][0]), nn.Linear(spec[-1][0], dim))
        depth = int(a["conv_pos_depth"])
        k = max(3, int(a["conv_pos_width"]) // depth)
        pos = nn.Sequential(_Transpose(), *[
            nn.Sequential(nn.Conv1d(dim, dim, k, padding=k // 2, groups=int(a["conv_pos_groups"])), _SamePad(k),
                          _Transpose(), nn.LayerNorm(dim, elementwise_affine=False), _Transpose(), nn.GELU())
            for _ in range(depth)], _Transpose())
        self.relative_positional_encoder = nn.Sequential(nn.LayerNorm(dim), pos) if a.get("conv_pos_pre_ln") else pos
        self.context_encoder = _BlockEncoder([make_block() for _ in range(int(a["prenet_depth"]))], make_norm())
        self.num_extra_tokens = int(a.get("num_extra_tokens", 0))
        if self.num_extra_tokens > 0:
            self.extra_tokens = nn.Parameter(torch.zeros(1, self.num_extra_tokens, dim))
        self.alibi_heads = int(a["num_alibi_heads"])
        scale_layers = int(a["prenet_depth"]) + int(a["model_depth"]) if a.get("learned_alibi_scale_per_layer") else 1
        scale_heads = self.alibi_heads if a.get("learned_alibi_scale_per_head") else 1
        self.alibi_scale = nn.Parameter(torch.full((scale_layers, 1, scale_heads, 1, 1), float(a.get("alibi_scale", 1.0))))
        self.spec = spec


def parse_conv_spec(text: str) -> list[tuple[int, int, int]]:
    """``feature_encoder_spec`` (a Python expression such as ``'[(512, 10, 5)] + [(512, 3, 2)] * 4'``) read
    without ``eval``: list literals joined by ``+``, repeated by ``* n``."""
    def value(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return value(node.left) * ast.literal_eval(node.right)
        return list(ast.literal_eval(node))
    try:
        spec = [tuple(int(v) for v in layer) for layer in value(ast.parse(str(text), mode="eval").body)]
    except (ValueError, TypeError, SyntaxError) as e:
        raise ValueError(f"feature_encoder_spec {text!r} is not a list of (dim, kernel, stride): {e}") from None
    if not spec or any(len(layer) != 3 for layer in spec):
        raise ValueError(f"feature_encoder_spec {text!r} is not a list of (dim, kernel, stride)")
    return spec


def _alibi(heads: int, t: int) -> torch.Tensor:
    """(heads, t, t) ALiBi bias of a bidirectional model: -slope_h * |i - j| (data2vec 2.0's slopes)."""
    def slopes(n):
        if math.log2(n).is_integer():
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start ** i for i in range(n)]
        p = 2 ** math.floor(math.log2(n))
        return slopes(p) + slopes(2 * p)[0::2][:n - p]
    pos = torch.arange(t)
    return torch.tensor(slopes(heads)).view(-1, 1, 1) * -(pos[None, :] - pos[:, None]).abs().float()


class Emotion2vec(nn.Module):
    """FunASR's ``Emotion2vec`` network for feature extraction (no masking, no decoder, no classifier)."""

    def __init__(self, model_conf: dict):
        super().__init__()
        c = model_conf
        if c.get("layer_norm_first"):
            raise ValueError("layer_norm_first: true is not an emotion2vec configuration (every released model "
                             "is post-LN); not supported")
        a = c["modalities"]["audio"]
        if a.get("learned_alibi") or not a.get("use_alibi_encoder", True):
            raise ValueError("only the fixed ALiBi bias of the released emotion2vec models is supported "
                             "(use_alibi_encoder: true, learned_alibi: false)")
        dim, eps, affine = int(c["embed_dim"]), float(c.get("norm_eps", 1e-5)), bool(c.get("norm_affine", True))

        def make_block():
            return _Block(dim, int(c["num_heads"]), float(c["mlp_ratio"]), eps, affine)

        def make_norm():
            return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)

        self.modality_encoders = nn.ModuleDict({"AUDIO": _AudioEncoder(a, dim, make_block, make_norm)})
        self.blocks = nn.ModuleList(make_block() for _ in range(int(c["depth"])))
        self.normalize = bool(c.get("normalize", False))

    @property
    def audio(self) -> _AudioEncoder:
        return self.modality_encoders["AUDIO"]

    def num_frames(self, n_samples: int) -> int:
        n = int(n_samples)
        for _, k, s in self.audio.spec:
            n = (n - k) // s + 1 if n >= k else 0
        return n

    def hidden_states(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state (B, T, D) of a batch of equal-length waveforms (B, n)."""
        enc = self.audio
        if self.normalize:  # the whole utterance, as FunASR's inference
            wav = F.layer_norm(wav, wav.shape[-1:])
        x = enc.project_features(enc.local_encoder(wav))
        x = x + enc.relative_positional_encoder(x)
        b, t, _ = x.shape
        bias = _alibi(enc.alibi_heads, t).to(x.device)[None].expand(b, -1, -1, -1)
        scale = enc.alibi_scale.clamp_min(0)
        per_layer = scale.size(0) > 1
        if not per_layer:
            bias = bias * scale.squeeze(0).type_as(bias)
        n = enc.num_extra_tokens
        if n > 0:
            x = torch.cat([enc.extra_tokens.expand(b, -1, -1), x], dim=1)
            bias = F.pad(bias, (n, 0, n, 0))
        x = enc.context_encoder.norm(x)
        states = [x[:, n:]]
        for i, blk in enumerate(list(enc.context_encoder.blocks) + list(self.blocks)):
            x = blk(x, bias * scale[i].type_as(bias) if per_layer else bias)
            states.append(x[:, n:])
        return states


def _folder_weights(path: Path) -> Path:
    meta = path / "configuration.json"
    if meta.is_file():
        try:
            name = json.loads(meta.read_text(encoding="utf-8")).get("file_path_metas", {}).get("init_param")
        except ValueError as e:
            raise ValueError(f"{meta}: not JSON ({e})") from None
        if name:
            return path / name
    if (path / "model.pt").is_file():
        return path / "model.pt"
    found = sorted(path.glob("*.pt"))
    return found[0] if len(found) == 1 else path / "model.pt"


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """FunASR's ``model.pt`` read as data (tensors only): unwrapped from ``state_dict`` / ``model_state_dict`` /
    ``model`` as FunASR's loader does, ``module.`` (DDP) and ``d2v_model.`` (fairseq fine-tuning) prefixes off."""
    import pickle
    import re

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises allow-listing the class: say only what the file holds
        m = re.search(r"GLOBAL (\S+)", str(e))
        what = f"a pickled {m.group(1)}" if m else type(e).__name__
        raise ValueError(f"{file}: refused: the weights file holds more than tensors and plain data ({what}); "
                         "it is read as data, never run") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{file}: not a state dict of tensors")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "d2v_model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


class Emotion2vecUpstream(nn.Module):
    """S3PRL upstream interface over :class:`Emotion2vec` (one utterance per forward: see ``batch`` in the
    configs; per-utterance normalisation and the position convolution make padding change the features)."""

    def __init__(self, ckpt: str):
        super().__init__()
        from etser.features.upstream import UpstreamError
        from etser.yamlfile import read_yaml

        path = Path(ckpt)
        conf_file = path / "config.yaml"
        if not conf_file.is_file():
            raise UpstreamError(f"emotion2vec: {conf_file.resolve()} not found: copy every file of the model's "
                                "ModelScope or Hugging Face page (config.yaml, model.pt, ...) into that folder")
        try:
            conf = read_yaml(conf_file) or {}
        except ValueError as e:
            raise UpstreamError(str(e)) from None
        if conf.get("model") != "Emotion2vec" or not isinstance(conf.get("model_conf"), dict):
            raise UpstreamError(f"{conf_file}: not an emotion2vec config (expected 'model: Emotion2vec' and "
                                f"'model_conf:', got model {conf.get('model')!r})")
        weights = _folder_weights(path)
        if not weights.is_file():
            raise UpstreamError(f"emotion2vec: the weights {weights.resolve()} are missing: copy model.pt of the "
                                "model's page into the folder")
        try:
            self.model = Emotion2vec(conf["model_conf"])
            state = read_state_dict(weights)
        except (KeyError, ValueError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise UpstreamError(f"emotion2vec {path}: {what}") from None
        key = "modality_encoders.AUDIO.alibi_scale"
        if key in state and state[key].dim() == 4:  # older checkpoints (fairseq's upgrade_state_dict_named)
            state[key] = state[key].unsqueeze(0)
        state = {k: v for k, v in state.items() if not k.startswith(_UNUSED)}
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or wrong:
            parts = [f"{len(missing)} weights missing (first: {missing[0]})" if missing else "",
                     f"{len(extra)} unknown (first: {extra[0]})" if extra else "",
                     f"{len(wrong)} of another shape (first: {wrong[0]}: {tuple(state[wrong[0]].shape)} in the "
                     f"file, {tuple(own[wrong[0]].shape)} from config.yaml)" if wrong else ""]
            raise UpstreamError(f"emotion2vec: {weights} does not match {conf_file}: "
                                + "; ".join(p for p in parts if p))
        self.model.load_state_dict(state, strict=True)
        self.model.eval()
        self.stride = math.prod(s for _, _, s in self.model.audio.spec)

    def get_downsample_rates(self, key: str | None = None) -> int:
        return self.stride

    def num_frames(self, n_samples: int) -> int:
        return self.model.num_frames(n_samples)

    def forward(self, wavs):
        if len({len(w) for w in wavs}) != 1:
            raise ValueError("emotion2vec takes equal-length batches only (batch.policy: equal_length)")
        param = next(self.model.parameters())
        return {"hidden_states": self.model.hidden_states(torch.stack(list(wavs)).to(param.device, param.dtype))}


def build(ckpt: str) -> Emotion2vecUpstream:
    """Factory for ``factory: etser.features.emotion2vec:build`` with ``args: {ckpt: <emotion2vec folder>}``."""
    return Emotion2vecUpstream(ckpt)

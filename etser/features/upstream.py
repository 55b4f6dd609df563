"""Upstream models: the config files, the factory that builds a model from one, and the dump tag.

A config ``conf/upstream/<name>.yaml`` names the model in one of four ways (plugging in a new model is a
new YAML file, nothing else):

- ``name: fbank``                       any S3PRL hub entry (``s3prl.hub``);
- ``name: wavlm_local`` + ``ckpt: path``  a local checkpoint for a ``*_local`` / ``*_custom`` entry;
- ``name: hf_hubert_custom`` + ``ckpt: dir``  a local Hugging Face directory;
- ``factory: pkg.module:build`` or ``factory: path/to/file.py:build`` + ``args: {...}``: a function
  returning an object with S3PRL's upstream interface (called on a list of 1-D 16 kHz float tensors, returns
  ``{"hidden_states": [(B, T, D) per layer]}``).  Whisper comes this way: ``etser.upstream:whisper_encoder``.

The tag of a config is ``<name>_<hash8>``: the hash covers everything that decides *which* features come out
(model, checkpoint, args, chunking, frame-level choice, autocast); ``download`` (a hint) and ``batch``
(resources: the batch policy keeps features equal within 1e-4) are left out.

A config may declare ``modality: <name>`` (``text``, ``visual``, or any modality registered in
etser/features/modalities/); its keys, defaults and checks are that modality's (etser.features.modality).
Configs without it are speech configs (etser/features/modalities/speech.py), whose normalised config has no
``modality`` key, so that speech tags stay as they were; the speech models are built here.

No network: a missing checkpoint fails at once with what to download and where to put it.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import yaml

from etser.features import modality as modalities
from etser.features.modality import NOT_HASHED, UpstreamError  # noqa: F401  (UpstreamError: raised by every stage-2 module)
from etser.yamlfile import read_yaml

SAMPLE_RATE = 16000
CONF_DIR = "conf/upstream"

PADDED_TOLERANCE = 1e-4  # relative; the padded policy is refused for a model that misses it


# ---------------------------------------------------------------- config files

def available_names(conf_dir: str | os.PathLike = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in Path(conf_dir).glob("*.yaml"))


def find_config(upstream: str | os.PathLike, conf_dir: str | os.PathLike = CONF_DIR) -> Path:
    """A config path from a name (``conf_dir/<name>.yaml``) or a path; UpstreamError listing the names."""
    path = Path(upstream)
    if path.suffix in (".yaml", ".yml"):
        conf_dir = path.parent
        if path.is_file():
            return path
    else:
        path = Path(conf_dir) / f"{upstream}.yaml"
        if path.is_file():
            return path
    names = available_names(conf_dir)
    raise UpstreamError(f"unknown upstream {path.stem!r}: no {path}; available in {conf_dir}/: "
                        f"{', '.join(names) if names else '(none)'}")


def modality(cfg: dict) -> str:
    """The name of a config's modality (etser.features.modality)."""
    return modalities.of(cfg).name


def normalize_config(user: dict, where: str = "upstream config") -> dict:
    """Fill defaults and check a config dict (its modality's own rules); UpstreamError naming ``where``."""
    if not isinstance(user, dict):
        raise UpstreamError(f"{where}: expected a mapping of options")
    return modalities.get(user.get("modality") or None, where).normalize(user, where)


def load_config(source: str | os.PathLike | dict, conf_dir: str | os.PathLike = CONF_DIR) -> dict:
    """A normalised config from a dict, a YAML path or a name in ``conf_dir``."""
    if isinstance(source, dict):
        return normalize_config(source)
    path = find_config(source, conf_dir)
    try:
        user = read_yaml(path) or {}
    except ValueError as e:
        raise UpstreamError(str(e)) from None
    return normalize_config(user, str(path))


def config_hash(cfg: dict) -> str:
    """8 hex digits of the SHA-256 of the canonical JSON of the hashed part of a normalised config."""
    hashed = {k: v for k, v in cfg.items() if k not in NOT_HASHED}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def config_tag(upstream: str | os.PathLike, conf_dir: str | os.PathLike = CONF_DIR) -> str:
    """``<name>_<hash8>`` for a config name or path: the dump directory of its features."""
    path = find_config(upstream, conf_dir)
    return f"{path.stem}_{config_hash(load_config(path))}"


# ---------------------------------------------------------------- building models

def _missing(what: Path, cfg: dict, detail: str = "") -> UpstreamError:
    hint = cfg.get("download") or "the checkpoint named in the config"
    where = f"{cfg.get('name') or cfg.get('factory')}"
    return UpstreamError(
        f"upstream {where}: {what} not found{detail}. Download {hint} and put it at {what.resolve()} "
        f"(relative paths are from the working directory {os.getcwd()}), or edit 'ckpt' in the config. "
        "Nothing is fetched from the network.")


def check_hf_dir(path: Path, cfg: dict, files: tuple[str, ...] = ("config.json", "preprocessor_config.json")) -> None:
    """A local Hugging Face model directory must hold these files (else transformers would go online)."""
    if not path.is_dir():
        raise _missing(path, cfg, " (a Hugging Face model directory)")
    absent = [f for f in files if not (path / f).is_file()]
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    if absent or not weights:
        lacks = ", ".join(absent + ([] if weights else ["model weights (*.safetensors or *.bin)"]))
        raise UpstreamError(
            f"upstream {cfg.get('name') or cfg.get('factory')}: the Hugging Face directory {path.resolve()} lacks "
            f"{lacks}; copy every file of {cfg.get('download') or 'the model repository'} into it "
            "(nothing is fetched from the network)")


def _check_ckpt(cfg: dict) -> None:
    """Fail before any model code runs when the checkpoint (``ckpt``, or a factory's ``args.ckpt``) is absent:
    the modality's own checks first, then these."""
    if modalities.of(cfg).check_ckpt(cfg):
        return
    ckpt = cfg.get("ckpt") or (cfg["args"].get("ckpt") if cfg.get("factory") else None)
    if not ckpt or str(ckpt).startswith(("http://", "https://")):
        return
    path = Path(ckpt)
    if str(cfg.get("name") or "").startswith("hf_"):
        check_hf_dir(path, cfg)
    elif not path.exists():
        raise _missing(path, cfg)


class _NoDownload(Exception):
    pass


def _hubconf_module(name: str) -> str | None:
    """The hubconf module that defines the S3PRL hub entry ``name``, found by reading source, not importing.

    ``import s3prl.hub`` imports every upstream (seconds); its ``from ...hubconf import *`` lines are read in
    order and the last module defining ``name`` wins, as it does there.  None when not found this way.
    """
    spec = importlib.util.find_spec("s3prl")
    if spec is None:
        raise UpstreamError("S3PRL is not installed (pip install espnet-s3prl; see requirements.txt)")
    root = Path(spec.submodule_search_locations[0])
    hub_src = (root / "hub.py").read_text(encoding="utf-8", errors="replace")
    pattern = re.compile(rf"^def {re.escape(name)}\(", re.M)
    found = None
    for module in re.findall(r"^from (s3prl\.upstream\.\w+\.hubconf) import \*", hub_src, re.M):
        path = root.parent / (module.replace(".", "/") + ".py")
        if path.is_file() and pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            found = module
    return found


def _hub_entry(name: str, module: str | None):
    """The S3PRL hub function ``name`` (from ``module`` when known, else from the whole hub)."""
    if module is not None:
        fn = getattr(importlib.import_module(module), name, None)
        if callable(fn):
            return fn
    import s3prl.hub as hub

    if name.startswith("_") or not callable(getattr(hub, name, None)):
        close = difflib.get_close_matches(name, hub.options(), n=5)
        raise UpstreamError(f"{name!r} is not an S3PRL hub entry" + (f"; close: {', '.join(close)}" if close else ""))
    return getattr(hub, name)


def _s3prl_entry(cfg: dict):
    """Call the S3PRL hub entry, turning any download attempt into a clear error."""
    name = cfg["name"]
    entry = _hub_entry(name, _hubconf_module(name))
    import s3prl.util.download as dl

    def refuse(url, dst, *args, **kwargs):
        raise _NoDownload(f"upstream {name}: the checkpoint {url} is not in S3PRL's cache. Download it and put it "
                          f"at {dst}, or give a local file as 'ckpt' with the matching *_local entry "
                          f"(e.g. name: {name.split('_')[0]}_local) (nothing is fetched from the network)")

    kwargs = dict(cfg["args"])
    if cfg.get("ckpt"):
        kwargs["ckpt"] = str(cfg["ckpt"])
    saved = dl._download_url_to_file, dl._download_url_to_file_requests
    dl._download_url_to_file = dl._download_url_to_file_requests = refuse
    try:
        return entry(**kwargs)
    except _NoDownload as e:
        raise UpstreamError(str(e)) from None
    finally:
        dl._download_url_to_file, dl._download_url_to_file_requests = saved


def load_factory(spec: str):
    """``module:function`` (module importable) or ``path/file.py:function`` -> the function."""
    target, _, func = str(spec).rpartition(":")
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise UpstreamError(f"factory {spec!r}: no such file {path.resolve()}")
        mod_name = "etser_upstream_plugin_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UpstreamError(f"factory {spec!r}: cannot import {target!r}: {e} "
                                "(is it on PYTHONPATH? a file path works too)") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UpstreamError(f"factory {spec!r}: {target} has no function {func!r}")
    return fn


def _conv_num_frames(module):
    """Frame count of a strided conv feature encoder (fairseq/S3PRL or Hugging Face), else None."""
    import torch

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv1d)]
    if not convs:
        return None
    layers = [(c.kernel_size[0], c.stride[0]) for c in convs if c.padding[0] == 0]
    if len(layers) != len(convs):
        return None

    def num_frames(n: int) -> int:
        for k, s in layers:
            n = (n - k) // s + 1 if n >= k else 0
        return n
    return num_frames


def _s3prl_num_frames(model):
    """Valid frames per input length for the S3PRL families this recipe ships, else None."""
    if hasattr(model, "extracter") and isinstance(getattr(model, "config", None), dict) and "kaldi" in model.config:
        kw = model.extracter[0].kwargs  # torchaudio.compliance.kaldi with snip_edges (its default)
        if not kw.get("snip_edges", True):
            return None
        win = int(SAMPLE_RATE * kw.get("frame_length", 25.0) * 0.001)
        hop = int(SAMPLE_RATE * kw.get("frame_shift", 10.0) * 0.001)
        return lambda n: 1 + (n - win) // hop if n >= win else 0
    fe = getattr(getattr(model, "model", None), "feature_extractor", None)  # fairseq/S3PRL and Hugging Face
    return _conv_num_frames(fe) if fe is not None else None


class Upstream:
    """A model built from a config, with what extraction needs to know about it.

    Calling it on a list of 1-D float32 16 kHz tensors gives the hidden states of every layer as a list of
    (B, T, D) float32 tensors.  ``stride`` is samples per frame; ``num_frames(n)`` the valid frames of an
    n-sample input inside a padded batch (None where unknown, which rules out the padded policy).
    """

    def __init__(self, model, cfg: dict, device: str = "cpu"):
        import torch

        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model
        if callable(getattr(model, "to", None)):
            model.to(self.device)
        if callable(getattr(model, "eval", None)):
            model.eval()
        self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.get("autocast"))
        if self.autocast is torch.float16 and self.device.type != "cuda":
            raise UpstreamError("autocast fp16 needs a CUDA device (use bf16 on CPU, or none)")
        self.max_input_seconds = getattr(model, "max_input_seconds", None)
        nf = getattr(model, "num_frames", None)
        self._num_frames = nf if callable(nf) else _s3prl_num_frames(model)
        self.stride = self._stride()
        if cfg["batch"]["policy"] == "padded" and self._num_frames is None:
            raise UpstreamError(
                f"upstream {cfg.get('name') or cfg.get('factory')}: batch policy 'padded' needs the valid frame count "
                "of a padded input, which this model does not tell (give it a num_frames(n_samples) method); "
                "use batch.policy: equal_length")
        if cfg["batch"]["policy"] == "padded":
            err = self.padding_error()
            if err > PADDED_TOLERANCE:
                raise UpstreamError(
                    f"upstream {cfg.get('name') or cfg.get('factory')}: batch policy 'padded' changes this model's "
                    f"features (relative difference {err:.1e} between a padded batch and one utterance at a time; "
                    "e.g. a GroupNorm over time, fairseq #3227); use batch.policy: equal_length")
        if self.max_input_seconds and cfg["chunk"]["seconds"] > self.max_input_seconds:
            raise UpstreamError(f"chunk.seconds {cfg['chunk']['seconds']} exceeds this model's longest input "
                                f"({self.max_input_seconds} s)")

    def _stride(self) -> int:
        get = getattr(self.model, "get_downsample_rates", None)
        if callable(get):
            rates = get("hidden_states")
            rates = set(rates) if isinstance(rates, (list, tuple)) else {rates}
            if len(rates) != 1:
                raise UpstreamError(f"layers have different frame rates {sorted(rates)}; not supported")
            declared = int(rates.pop())
            # A wrapper may declare the usual 320 for a model built with other conv strides (a local checkpoint
            # of another design): the conv arithmetic, where known, is the truth.
            measured = self._arithmetic_stride()
            if measured is not None and measured != declared:
                print(f"warning: upstream {self.cfg.get('name') or self.cfg.get('factory')}: declares {declared} "
                      f"samples per frame ({SAMPLE_RATE / declared:g} frames/s) but its feature encoder gives "
                      f"{measured} ({SAMPLE_RATE / measured:g} frames/s): using {measured}", file=sys.stderr)
                return measured
            return declared
        # No declared rate: measure it from two probe lengths.
        import torch

        g = torch.Generator().manual_seed(0)
        t = [self.forward([torch.randn(n, generator=g)])[0].shape[1] for n in (SAMPLE_RATE, 2 * SAMPLE_RATE)]
        if t[1] <= t[0]:
            raise UpstreamError("cannot tell the frame rate of this upstream: give it get_downsample_rates()")
        return int(round(SAMPLE_RATE / (t[1] - t[0])))

    def _arithmetic_stride(self) -> int | None:
        """Samples per frame from the valid-frame arithmetic (conv strides), None when unknown."""
        if self._num_frames is None:
            return None
        n = 10 * SAMPLE_RATE
        frames = self._num_frames(2 * n) - self._num_frames(n)
        return int(round(n / frames)) if frames > 0 else None

    def padding_error(self) -> float:
        """Largest relative difference (per layer and item) between a padded batch and single forwards."""
        import torch

        g = torch.Generator().manual_seed(0)
        wavs = [0.1 * torch.randn(n, generator=g) for n in (16000 + 4321, 9876)]
        saved, self.autocast = self.autocast, None  # measured in float32: half precision differs anyway
        try:
            batch = self.forward(wavs)
            err = 0.0
            for i, w in enumerate(wavs):
                single = self.forward([w])
                t = min(self.num_frames(len(w)), batch[0].shape[1])
                if t != single[0].shape[1]:
                    return float("inf")
                for b, s in zip(batch, single):
                    err = max(err, float((b[i, :t] - s[0]).norm() / s[0].norm().clamp_min(1e-12)))
        finally:
            self.autocast = saved
        return err

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.stride

    def num_frames(self, n_samples: int) -> int | None:
        return None if self._num_frames is None else int(self._num_frames(int(n_samples)))

    def forward(self, wavs: list) -> list:
        import torch

        if self.device.type == "cuda":  # page-locked host copies: the transfers overlap the queued kernels
            wavs = [w if w.is_cuda else (w if w.is_pinned() else w.pin_memory()).to(self.device, non_blocking=True)
                    for w in wavs]
        else:
            wavs = [w.to(self.device) for w in wavs]
        with torch.inference_mode():
            if self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    out = self.model(wavs)
            else:
                out = self.model(wavs)
        if not isinstance(out, dict) or "hidden_states" not in out:
            raise UpstreamError("the upstream returned no 'hidden_states' (S3PRL interface: a dict with a list of "
                                "(B, T, D) tensors)")
        hs = list(out["hidden_states"])
        if not hs or any(h.dim() != 3 or h.shape[0] != len(wavs) for h in hs):
            raise UpstreamError(f"hidden_states must be a non-empty list of (B={len(wavs)}, T, D) tensors; got "
                                f"{[tuple(h.shape) for h in hs]}")
        if len({h.shape[1:] for h in hs}) != 1:
            raise UpstreamError(f"layers differ in length or width: {[tuple(h.shape) for h in hs]}")
        return [h.float() for h in hs]

    __call__ = forward


def build_upstream(cfg: dict | str | os.PathLike, device: str = "cpu") -> Upstream:
    """Build the model of a config (dict, path or name); checkpoint checks come first, no network."""
    cfg = load_config(cfg) if not isinstance(cfg, dict) else normalize_config(cfg)
    if cfg.get("modality"):  # speech configs have none (etser/features/modalities/speech.py)
        raise UpstreamError(f"upstream {cfg['name'] or cfg['factory']}: a {cfg['modality']} config; this builds "
                            "speech upstreams only (stage 2 runs the others: python -m etser.features.extract job)")
    if cfg["name"] and _hubconf_module(cfg["name"]) is None:
        _hub_entry(cfg["name"], None)  # a name found only by importing the whole hub, or a clear error
    _check_ckpt(cfg)
    if cfg["factory"]:
        model = load_factory(cfg["factory"])(**cfg["args"])
        if not callable(model):
            raise UpstreamError(f"factory {cfg['factory']} returned {type(model).__name__}, which is not callable")
    else:
        model = _s3prl_entry(cfg)
    return Upstream(model, cfg, device)


def versions() -> dict:
    """Versions of the libraries that decide the features (recorded in meta.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "torchaudio", "espnet-s3prl", "s3prl", "transformers", "kaldiio", "av",
                "opencv-python-headless", "scikit-learn", "opensmile"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- Whisper (plug-in route, built in)

class WhisperEncoderUpstream:
    """Hidden states of a Hugging Face Whisper encoder (input embeddings + every layer), S3PRL interface.

    Each input is padded to Whisper's 30 s window by its feature extractor, as in training, so a batch gives
    the same result as one utterance at a time; frames past the audio (``ceil(n / 320)``) are cut off.
    """

    max_input_seconds = 30.0

    def __init__(self, ckpt: str):
        import transformers
        from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

        path = Path(ckpt)
        check_hf_dir(path, {"factory": "etser.upstream:whisper_encoder", "download": "the openai/whisper-* repository"})
        transformers.utils.logging.disable_progress_bar()
        self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        # The audio-classification class loads the encoder's weights only (no decoder in memory).
        self.encoder = WhisperForAudioClassification.from_pretrained(path).encoder
        self.hop = self.extractor.hop_length * 2  # the encoder's second conv has stride 2
        self.max_frames = self.encoder.config.max_source_positions

    def to(self, device):
        self.encoder.to(device)
        return self

    def eval(self):
        self.encoder.eval()
        return self

    def get_downsample_rates(self, key: str | None = None) -> int:
        return self.hop

    def num_frames(self, n_samples: int) -> int:
        return min(math.ceil(n_samples / self.hop), self.max_frames)

    def __call__(self, wavs):
        import torch

        device = next(self.encoder.parameters()).device
        # float32 log-mels also under a CPU autocast (bf16): the extractor's STFT is torch and its .numpy() refuses bf16
        with torch.autocast("cpu", enabled=False):
            feats = self.extractor([w.detach().cpu().numpy() for w in wavs], sampling_rate=SAMPLE_RATE,
                                   return_tensors="pt").input_features
        out = self.encoder(feats.to(device, next(self.encoder.parameters()).dtype), output_hidden_states=True)
        t = max(self.num_frames(len(w)) for w in wavs)
        return {"hidden_states": [h[:, :t] for h in out.hidden_states]}


def whisper_encoder(ckpt: str) -> WhisperEncoderUpstream:
    """Factory for ``factory: etser.upstream:whisper_encoder`` with ``args: {ckpt: <HF Whisper dir>}``."""
    return WhisperEncoderUpstream(ckpt)


class WhisperDecoderUpstream:
    """Whisper as the official EmotionTalk/MERBench extractor runs it: the whole model on the log-mels of the
    first 30 s (its feature extractor pads or cuts every input to 30 s), the decoder fed two decoder-start
    tokens, the decoder's hidden states at those two positions.  S3PRL interface: the two positions are the
    "frames" of every utterance (``num_frames`` is 2 whatever the length), so their pooled mean is the official
    feature; ``layers: last`` (the official: the decoder's last hidden state) or ``all`` (embeddings + every
    decoder layer).  Audio past 30 s is not used, as in the official code: give the config a ``chunk.seconds``
    longer than any utterance so that it is one window."""

    positions = 2
    # one "frame" per 15 s: the two decoder positions of a 30 s window (the stage needs a frame rate)
    stride = 15 * SAMPLE_RATE

    def __init__(self, ckpt: str, layers: str = "last"):
        import transformers
        from transformers import WhisperFeatureExtractor, WhisperModel

        if layers not in ("last", "all"):
            raise UpstreamError(f"whisper_decoder: layers must be last or all, got {layers!r}")
        path = Path(ckpt)
        check_hf_dir(path, {"factory": "etser.upstream:whisper_decoder", "download": "the openai/whisper-* repository"})
        transformers.utils.logging.disable_progress_bar()
        self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        self.model = WhisperModel.from_pretrained(path)
        self.start = self.model.config.decoder_start_token_id
        self.layers = layers

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def get_downsample_rates(self, key: str | None = None) -> int:
        return self.stride

    def num_frames(self, n_samples: int) -> int:
        return self.positions

    def __call__(self, wavs):
        import torch

        param = next(self.model.parameters())
        with torch.autocast("cpu", enabled=False):  # float32 log-mels (see WhisperEncoderUpstream)
            feats = self.extractor([w.detach().cpu().numpy() for w in wavs], sampling_rate=SAMPLE_RATE,
                                   return_tensors="pt").input_features
        start = torch.full((len(wavs), self.positions), self.start, dtype=torch.long, device=param.device)
        out = self.model(feats.to(param.device, param.dtype), decoder_input_ids=start, output_hidden_states=True)
        states = out.decoder_hidden_states
        return {"hidden_states": list(states[-1:] if self.layers == "last" else states)}


def whisper_decoder(ckpt: str, layers: str = "last") -> WhisperDecoderUpstream:
    """Factory for ``factory: etser.upstream:whisper_decoder`` with ``args: {ckpt: <HF Whisper dir>}``."""
    return WhisperDecoderUpstream(ckpt, layers)


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etser.features.upstream", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tag", help="print <name>_<hash8> of a config (name or path)")
    p.add_argument("upstream")
    p.add_argument("--conf_dir", default=CONF_DIR)
    p.add_argument("--check_ckpt", action="store_true",
                   help="also fail now if the config's checkpoint is absent (before N jobs each find out)")
    p = sub.add_parser("list", help="print the config names in conf_dir")
    p.add_argument("--conf_dir", default=CONF_DIR)
    p = sub.add_parser("show", help="print the normalised config as YAML")
    p.add_argument("upstream")
    p.add_argument("--conf_dir", default=CONF_DIR)
    p = sub.add_parser("check", help="build the model and print its layers, width and frame rate")
    p.add_argument("upstream")
    p.add_argument("--conf_dir", default=CONF_DIR)
    p.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "tag":
            tag = config_tag(args.upstream, args.conf_dir)
            if args.check_ckpt:
                _check_ckpt(load_config(args.upstream, args.conf_dir))
            print(tag)
        elif args.cmd == "list":
            print("\n".join(available_names(args.conf_dir)))
        elif args.cmd == "show":
            print(yaml.safe_dump(load_config(args.upstream, args.conf_dir), sort_keys=False), end="")
        elif args.cmd == "check":
            import torch

            up = build_upstream(load_config(args.upstream, args.conf_dir), args.device)
            hs = up([torch.zeros(SAMPLE_RATE)])
            print(f"{args.upstream}: {len(hs)} layers x {hs[0].shape[-1]} dims, {up.frame_rate:g} frames/s, "
                  f"batch policy {up.cfg['batch']['policy']}")
    except UpstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The speech modality: the utterances' audio (``data/<set>/wav.scp``) through an upstream built by
etser.features.upstream (an S3PRL hub entry, a local checkpoint, a Hugging Face directory or a factory).

Per utterance: the time-mean and time-std (population, over valid frames) of every layer, (L, D) float32
each, and, when the config asks, the frames of chosen layers.  Long utterances are cut into windows
(``chunk.seconds``, overlapping by ``chunk.overlap``); of each window the frames nearest its centre are kept,
so every frame of the stitched sequence comes from the window where it has the most context on both sides.
Model memory is bounded by the window.  Audio is decoded and resampled ahead of the model, in a thread or in
worker processes (etser.features.loader); unreadable audio is a bad input (``on_bad_input``).

Speech configs have no ``modality`` key (they predate modalities, and the key would change their tags).
Inference calls ``extract_wavs`` / ``pooled_features`` / ``iter_features`` to featurise files as stage 2 does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from etser.features.audio import TARGET_RATE, audio_seconds, load_audio
from etser.features.dumpio import prefetch, resolve_layers
from etser.features.modality import (BadInput, Modality, UpstreamError, check_frames, merge_defaults, number,
                                     register)

MIN_SAMPLES = 800  # 0.05 s; shorter audio is zero-padded to this (S3PRL's S3PRLUpstream does the same)

DEFAULTS: dict = {
    "name": None,        # S3PRL hub entry
    "ckpt": None,        # checkpoint file or HF directory for *_local / *_custom / hf_* entries
    "factory": None,     # "module:function" or "file.py:function"
    "args": {},          # keyword arguments of the hub entry or the factory
    "download": None,    # where to get the checkpoint (shown when it is missing; not hashed)
    "batch": {
        # equal_length: only segments of identical length share a batch (exact for every model);
        # padded: pad and mask (only for models whose outputs ignore padding; see docs/upstreams.md)
        "policy": "equal_length",
        "max_seconds": 60.0,   # padded audio per batch
        "max_items": 16,
    },
    "chunk": {
        "seconds": 30.0,   # longer utterances are cut into windows of this length ...
        "overlap": 4.0,    # ... overlapping by this much; each window's frames nearest its centre are kept
    },
    "frames": {
        "layers": None,      # None: pooled statistics only; "all" or a list of layer indices
        "dtype": "float16",  # float16 (kaldiio numpy ark), float32 (Kaldi FM) or kaldi_compressed (Kaldi CM)
    },
    "autocast": None,        # None, fp16 (CUDA) or bf16
    # audio stage 2 cannot read (decode error, truncated, NaN): fail (the job stops naming the utterance and
    # file) or exclude (listed with the reason in <dir>/excluded; stages 3-4 leave it out, counted)
    "on_bad_input": "fail",
}
BATCH_POLICIES = ("equal_length", "padded")
AUTOCAST = (None, "fp16", "bf16")


# ---------------------------------------------------------------- windows

def plan_windows(n: int, stride: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int | None]]:
    """Windows ``(start, end, keep_from, keep_to)`` covering ``n`` samples; frames are global indices.

    Window k starts at ``k * hop`` (hop = chunk - overlap, rounded down to whole frames); the last window
    ends at ``n`` and starts on a frame boundary at most ``chunk`` before it.  Between two windows the
    boundary is the middle of their overlap, so each kept frame is at least overlap/2 from its window's
    edge (except at the utterance's own ends).  ``keep_to`` None means "to the window's last frame".
    """
    if n <= chunk:
        return [(0, n, 0, None)]
    hop = (chunk - overlap) // stride * stride
    if hop <= 0 or chunk - hop < 2 * stride:
        raise ValueError(f"chunk of {chunk} samples with overlap {overlap} leaves no room for stride {stride}")
    k = -(-(n - chunk) // hop)  # windows before the last one
    starts = [i * hop for i in range(k)] + [-(-(n - chunk) // stride) * stride]
    ends = [min(s + chunk, n) for s in starts]
    bounds = [((starts[i + 1] + ends[i]) // 2) // stride for i in range(k)]
    keep_from = [0] + bounds
    keep_to: list[int | None] = bounds + [None]
    return [(starts[i], ends[i], keep_from[i], keep_to[i]) for i in range(k + 1)]

# ---------------------------------------------------------------- per-utterance accumulation

@dataclass
class UttFeatures:
    """What extraction gives for one utterance."""

    utt: str
    mean: np.ndarray            # (L, D) float32
    std: np.ndarray             # (L, D) float32, population std over frames
    num_frames: int
    seconds: float              # audio length at 16 kHz
    frames: np.ndarray | None   # (T, len(frame_layers) * D) float32, or None


@dataclass
class _Utt:
    utt: str
    samples: int
    windows: int
    done: int = 0
    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    frames: list = field(default_factory=list)

    def add(self, x, frame_layers):
        """x: (L, t, D) tensor of kept frames; merge count/mean/M2 (Chan et al.) in float64."""
        t = x.shape[1]
        if t == 0:
            return
        mean = x.mean(dim=1)
        m2 = ((x - mean.unsqueeze(1)) ** 2).sum(dim=1)
        mean, m2 = mean.double().cpu().numpy(), m2.double().cpu().numpy()
        if self.n == 0:
            self.n, self.mean, self.m2 = t, mean, m2
        else:
            n = self.n + t
            delta = mean - self.mean
            self.mean = self.mean + delta * (t / n)
            self.m2 = self.m2 + m2 + delta ** 2 * (self.n * t / n)
            self.n = n
        if frame_layers is not None:
            sel = x[frame_layers]  # (k, t, D)
            self.frames.append(sel.permute(1, 0, 2).reshape(t, -1).cpu().numpy())

    def result(self, where: str) -> UttFeatures:
        if self.n == 0:
            raise RuntimeError(f"{where}: the upstream gave no frames for {self.samples / TARGET_RATE:.3f} s of audio")
        frames = np.concatenate(self.frames, axis=0) if self.frames else None
        return UttFeatures(self.utt, self.mean.astype(np.float32), np.sqrt(self.m2 / self.n).astype(np.float32),
                           self.n, self.samples / TARGET_RATE, frames)


# ---------------------------------------------------------------- extraction

def iter_features(upstream, items: Iterable[tuple[str, np.ndarray]], where: Callable[[str], str] = str,
                  frame_layers="config") -> Iterator[UttFeatures]:
    """Features of ``(utt, 16 kHz float32 waveform)`` pairs, in input order.

    Batches follow the config's policy: ``equal_length`` puts only segments of identical length in one batch
    (no padding, so exact for any model); ``padded`` pads and keeps each item's ``upstream.num_frames(n)``
    valid frames.  ``frame_layers``: "config" (the config's frames.layers), None, "all" or a list.
    """
    import torch

    cfg = upstream.cfg
    policy, max_items = cfg["batch"]["policy"], int(cfg["batch"]["max_items"])
    max_samples = int(float(cfg["batch"]["max_seconds"]) * TARGET_RATE)
    stride = upstream.stride
    chunk = max(int(cfg["chunk"]["seconds"] * TARGET_RATE) // stride * stride, stride)
    overlap = int(cfg["chunk"]["overlap"] * TARGET_RATE)
    layer_spec = cfg["frames"]["layers"] if frame_layers == "config" else frame_layers
    layers: list[int] | None = None
    resolved = False

    def segments():
        for utt, wav in items:
            if wav.ndim != 1 or len(wav) == 0:
                raise ValueError(f"{where(utt)}: expected a non-empty 1-D waveform, got shape {wav.shape}")
            if len(wav) < MIN_SAMPLES:
                print(f"warning: {where(utt)}: {len(wav) / TARGET_RATE:.3f} s of audio zero-padded to "
                      f"{MIN_SAMPLES / TARGET_RATE} s", file=sys.stderr)
                wav = np.pad(wav, (0, MIN_SAMPLES - len(wav)))
            wins = plan_windows(len(wav), stride, chunk, overlap)
            state = _Utt(utt, len(wav), len(wins))
            tensor = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
            for start, end, keep_from, keep_to in wins:
                yield state, tensor[start:end], start // stride, keep_from, keep_to

    def fits(batch, seg) -> bool:
        if len(batch) >= max_items:
            return False
        n = len(seg[1])
        if policy == "equal_length":
            return n == len(batch[0][1]) and n * (len(batch) + 1) <= max_samples
        return max(n, max(len(b[1]) for b in batch)) * (len(batch) + 1) <= max_samples

    def run(batch):
        nonlocal layers, resolved
        try:
            hs = upstream([b[1] for b in batch])
        except RuntimeError as e:  # torch's errors (out of memory first of all) name no utterance
            utts = list(dict.fromkeys(b[0].utt for b in batch))
            more = f" and {len(utts) - 1} more" if len(utts) > 1 else ""
            raise RuntimeError(f"{where(utts[0])}{more}: the upstream failed on a batch of {len(batch)} "
                               f"segments of up to {max(len(b[1]) for b in batch) / TARGET_RATE:.2f} s "
                               f"(lower batch.max_seconds or chunk.seconds if out of memory): {e}") from e
        if not resolved:
            layers = resolve_layers(layer_spec, len(hs))
            resolved = True
        t_max = hs[0].shape[1]
        for i, (state, wav, offset, keep_from, keep_to) in enumerate(batch):
            valid = t_max if len(batch) == 1 or policy == "equal_length" else min(upstream.num_frames(len(wav)), t_max)
            lo = keep_from - offset
            hi = valid if keep_to is None else keep_to - offset
            if not (0 <= lo <= hi <= valid):
                raise RuntimeError(f"{where(state.utt)}: window of {len(wav)} samples gave {valid} frames, "
                                   f"fewer than the kept range {lo}:{hi}; raise chunk.overlap")
            state.add(torch.stack([h[i, lo:hi] for h in hs]), layers)
            state.done += 1
            if state.done == state.windows:
                expected = upstream.num_frames(state.samples) if state.windows > 1 else None
                if expected is not None and state.n != expected:
                    # stitched windows must give what one forward of the whole utterance would: anything
                    # else means a wrong frame-rate assumption, and frames would be dropped or doubled
                    raise RuntimeError(f"{where(state.utt)}: {state.windows} windows stitched to {state.n} frames, "
                                       f"but the whole {state.samples / TARGET_RATE:.2f} s give {expected} at "
                                       f"{upstream.stride} samples per frame; check the upstream's frame rate "
                                       "(get_downsample_rates) or use a longer chunk.seconds")
                yield state.result(where(state.utt))

    batch: list = []
    for seg in segments():
        if batch and not fits(batch, seg):
            yield from run(batch)
            batch = []
        batch.append(seg)
    if batch:
        yield from run(batch)


def extract_wavs(upstream, wavs: dict[str, str] | Iterable[tuple[str, str]],
                 frame_layers=None) -> dict[str, UttFeatures]:
    """In-memory features of ``{utt: wav path}``: what inference calls (no files written)."""
    pairs = list(wavs.items()) if isinstance(wavs, dict) else list(wavs)
    paths = dict(pairs)
    loaded = ((utt, wav) for (utt, _), wav in prefetch(pairs, lambda p: load_audio(p[1], p[0])))
    feats = iter_features(upstream, loaded, where=lambda u: f"utterance {u} ({paths[u]})", frame_layers=frame_layers)
    return {f.utt: f for f in feats}


def pooled_features(upstream, wavs: dict[str, str] | Iterable[tuple[str, str]]
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(utts, means (N, L, D), stds (N, L, D))`` for wav files, in the given order (inference)."""
    pairs = list(wavs.items()) if isinstance(wavs, dict) else list(wavs)  # an iterator is read once
    feats = extract_wavs(upstream, pairs, frame_layers=None)
    utts = [u for u, _ in pairs]
    return utts, np.stack([feats[u].mean for u in utts]), np.stack([feats[u].std for u in utts])


# ---------------------------------------------------------------- the modality

class Speech(Modality):
    name = "speech"
    implicit = True
    input_table = "wav.scp"

    def normalize(self, user, where):
        user = {k: v for k, v in user.items() if k != "modality"}  # speech configs hash as before modalities
        cfg = merge_defaults(user, DEFAULTS, where)
        if bool(cfg["name"]) == bool(cfg["factory"]):
            raise UpstreamError(f"{where}: give exactly one of 'name' (an S3PRL hub entry) or 'factory'")
        if cfg["args"] is None:
            cfg["args"] = {}
        if not isinstance(cfg["args"], dict):
            raise UpstreamError(f"{where}: 'args' must be a mapping")
        if cfg["factory"] and ":" not in str(cfg["factory"]):
            raise UpstreamError(f"{where}: factory {cfg['factory']!r} must be 'module:function' or 'file.py:function'")
        b = cfg["batch"]
        if b["policy"] not in BATCH_POLICIES:
            raise UpstreamError(f"{where}: batch.policy must be one of {', '.join(BATCH_POLICIES)}")
        if not (number(b, "max_seconds", "batch", where) > 0 and number(b, "max_items", "batch", where, int) >= 1):
            raise UpstreamError(f"{where}: batch.max_seconds must be > 0 and batch.max_items >= 1")
        c = cfg["chunk"]
        c["seconds"], c["overlap"] = number(c, "seconds", "chunk", where), number(c, "overlap", "chunk", where)
        if not (c["seconds"] > 0 and 0.1 <= c["overlap"] <= c["seconds"] / 2):
            raise UpstreamError(f"{where}: need chunk.seconds > 0 and 0.1 <= chunk.overlap <= chunk.seconds / 2")
        check_frames(cfg, where)
        if cfg["autocast"] not in AUTOCAST:
            raise UpstreamError(f"{where}: autocast must be null, fp16 or bf16")
        if cfg["on_bad_input"] not in ("fail", "exclude"):
            raise UpstreamError(f"{where}: on_bad_input must be fail or exclude, got {cfg['on_bad_input']!r}")
        return cfg

    def order(self, cfg, part, table, data):
        from etser.datadir import c_sort_key

        dur = _durations(Path(data), part, table)
        return sorted(part, key=lambda u: (-dur[u], c_sort_key(u)))  # longest first: memory trouble shows at once

    def build(self, cfg, device):
        from etser.features.upstream import build_upstream

        return build_upstream(cfg, device)

    def features(self, cfg, upstream, job):
        """Audio decoded ahead of the model: ``job.num_workers`` processes (etser.features.loader); 0: one
        background thread; None: ``num_threads`` on CUDA (the cores go to reading), 0 on CPU (to the forward)."""
        from etser.features.loader import BadAudio, load_in_workers, load_utt, load_utt_or_reason

        workers = (job.num_threads if job.device == "cuda" else 0) if job.num_workers is None else job.num_workers
        pairs = [(u, job.table[u]) for u in job.order]
        lenient = cfg["on_bad_input"] == "exclude"
        load = load_utt_or_reason if lenient else load_utt
        if workers > 0:
            got = load_in_workers(pairs, load, workers, job.prefetch_depth, describe=lambda p: job.where(p[0]))
        else:
            got = prefetch(pairs, load if lenient else (lambda p: load_audio(p[1], p[0])), job.prefetch_depth)
        bad: list[tuple[str, str]] = []

        def readable():
            for p, w in got:
                if isinstance(w, BadAudio):  # on_bad_input: exclude: listed by the runner, never dropped silently
                    bad.append((p[0], w.reason))
                    continue
                yield p[0], w
        job.stats.update(audio_seconds=0.0, stride=upstream.stride)
        try:
            for f in iter_features(upstream, readable(), where=job.where):
                while bad:
                    utt, reason = bad.pop(0)
                    yield utt, BadInput(reason), {}
                job.stats["audio_seconds"] += f.seconds
                yield f.utt, f, {}
            for utt, reason in bad:
                yield utt, BadInput(reason), {}
        finally:
            got.close()  # stops the readers now (worker processes), not when garbage collected

    def summary(self, stats, lists):
        audio_s, elapsed = stats.get("audio_seconds", 0.0), stats.get("elapsed_seconds", 0.0)
        return [f"{audio_s / 3600:.3f} h audio", f"RTF {elapsed / audio_s if audio_s > 0 else 0.0:.4f}"]

    def meta(self, cfg, markers, tables, src):
        stride = markers[0]["stride"]
        return {"frame_rate": TARGET_RATE / stride, "stride_samples": stride,
                "pooled": "time-mean and population time-std of each layer over the utterance's valid frames, (L, D)",
                "audio_hours": round(sum(m["audio_seconds"] for m in markers) / 3600, 4)}


def _durations(data: Path, keys: list[str], wav: dict[str, str]) -> dict[str, float]:
    """Seconds per utterance from utt2dur (stage 1 writes it), else from the audio headers."""
    from etser.datadir import read_table

    dur = {}
    if (data / "utt2dur").is_file():
        for k, v in read_table(data / "utt2dur").items():
            try:
                dur[k] = float(v)
            except ValueError:
                pass
    return {k: dur[k] if k in dur else audio_seconds(wav[k]) for k in keys}


register(Speech())

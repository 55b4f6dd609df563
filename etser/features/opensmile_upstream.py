"""openSMILE feature sets (eGeMAPSv02, ComParE_2016) as speech upstreams, through the ``opensmile`` package.

``factory: etser.features.opensmile_upstream:build`` with ``args: {feature_set: eGeMAPSv02, level: functionals}``
(or ``level: lld``).  The package ships the SMILExtract library and the sets' configs: nothing is downloaded.
The recipe hands the upstream the same 16 kHz mono waveform as every other one (``etser.audio.load_audio``).

* ``lld``: the low-level descriptors, one frame every 10 ms (openSMILE's frames of 20-60 ms start every
  160 samples: ``n // 160 - 4`` frames), a single "layer" (25 dims for eGeMAPS, 65 for ComParE).
* ``functionals``: the set's statistics over the whole utterance (88 for eGeMAPS, 6373 for ComParE) as one
  frame per utterance, so stage 2's pooled time-mean is the functionals vector and its time-std is 0.  The
  declared frame rate is one frame per hour: the recipe never cuts an utterance shorter than that into
  windows (functionals of windows averaged are not the functionals of the utterance).

openSMILE fills inputs shorter than 60 ms with NaN; they are zero-padded to 60 ms first (960 samples).
"""

from __future__ import annotations

import warnings

import numpy as np

SAMPLE_RATE = 16000
HOP = 160                      # openSMILE's 10 ms frame step at 16 kHz
MIN_SAMPLES = 960              # shorter inputs give NaN rows (openSMILE's longest LLD window is 60 ms)
LEVELS = {"functionals": "Functionals", "lld": "LowLevelDescriptors"}
FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016", "GeMAPSv01b", "eGeMAPSv01b")
ONE_PER_UTTERANCE = 3600 * SAMPLE_RATE   # samples per "frame" declared for functionals (see the docstring)


class OpenSmileUpstream:
    """S3PRL upstream interface over ``opensmile.Smile``: one utterance at a time, padded to a batch."""

    def __init__(self, feature_set: str = "eGeMAPSv02", level: str = "functionals"):
        import opensmile

        from etser.features.upstream import UpstreamError

        if feature_set not in FEATURE_SETS:
            raise UpstreamError(f"opensmile: feature_set must be one of {', '.join(FEATURE_SETS)}, got {feature_set!r}")
        if level not in LEVELS:
            raise UpstreamError(f"opensmile: level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.feature_set, self.level = feature_set, level
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                     feature_level=opensmile.FeatureLevel[LEVELS[level]])
        self.feature_names = list(self.smile.feature_names)
        self.stride = ONE_PER_UTTERANCE if level == "functionals" else HOP

    def get_downsample_rates(self, key: str | None = None) -> int:
        return self.stride

    def num_frames(self, n_samples: int) -> int:
        return 1 if self.level == "functionals" else max(int(n_samples), MIN_SAMPLES) // HOP - 4

    def _one(self, wav) -> np.ndarray:
        x = wav.detach().cpu().numpy().astype(np.float32, copy=False)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                out = self.smile.process_signal(x, SAMPLE_RATE).to_numpy(dtype=np.float32, copy=True)
        except Exception as e:  # the caller names the utterance (RuntimeError from the upstream)
            raise RuntimeError(f"openSMILE {self.feature_set} {self.level}: {type(e).__name__}: {e}") from e
        if not np.isfinite(out).all():  # e.g. "Segment too short, filling with NaN": never written
            why = "; ".join(str(w.message) for w in said) or "no warning given"
            raise RuntimeError(f"openSMILE {self.feature_set} {self.level} gave non-finite features for "
                               f"{len(x)} samples ({why})")
        expected = self.num_frames(len(x))
        if out.shape != (expected, len(self.feature_names)):
            raise RuntimeError(f"openSMILE {self.feature_set} {self.level} gave {out.shape[0]} frames for "
                               f"{len(x)} samples, expected {expected}")
        return out

    def __call__(self, wavs):
        import torch

        outs = [torch.from_numpy(self._one(w)) for w in wavs]
        t = max(o.shape[0] for o in outs)
        batch = torch.zeros(len(outs), t, outs[0].shape[1])
        for i, o in enumerate(outs):
            batch[i, :o.shape[0]] = o
        return {"hidden_states": [batch]}


def build(feature_set: str = "eGeMAPSv02", level: str = "functionals") -> OpenSmileUpstream:
    """Factory for ``factory: etser.features.opensmile_upstream:build``."""
    return OpenSmileUpstream(feature_set, level)

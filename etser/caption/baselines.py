"""Two reference points for the caption table, scored with the same metrics as the decoders:

- ``frequent``: the most frequent training caption of the kind, for every utterance (ties: C order);
- ``nearest``: the caption of the nearest training utterance in feature space (cosine of time-mean frames of
  the same layers, each dimension standardised with the training mean and std).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from etser.caption.data import CaptionSet, pooled

BASELINES = ("frequent", "nearest")


def most_frequent(train: CaptionSet) -> str:
    counts = Counter(train.captions)
    return min(counts, key=lambda c: (-counts[c], c))


def nearest_captions(train: CaptionSet, test: CaptionSet) -> list[str]:
    a, b = pooled(train), pooled(test)
    mu, sd = a.mean(0), a.std(0) + 1e-8
    a, b = (a - mu) / sd, (b - mu) / sd
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return [train.captions[i] for i in (b @ a.T).argmax(1)]


def predict(name: str, train: CaptionSet, test: CaptionSet) -> list[str]:
    if name == "frequent":
        return [most_frequent(train)] * len(test)
    if name == "nearest":
        return nearest_captions(train, test)
    raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")

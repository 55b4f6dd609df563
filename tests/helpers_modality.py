"""A test-only modality, whole in this one file: ``tally``, read from ``data/<set>/tally`` (``utt n1 n2 ...``).

Its "model" turns the numbers of an utterance into T = len(numbers) frames of two layers, (2, T, 3):
layer 0 is ``[x, x^2, 1] * scale``, layer 1 its negation.  Importing this module registers it; nothing
else in the package changes.
"""

from __future__ import annotations

import numpy as np

from etser.features.modality import (BadInput, Modality, UpstreamError, check_frames, merge_defaults, pool,
                                     register)


class Tally(Modality):
    name = "tally"
    input_table = "tally"
    files = False  # the numbers are the values themselves
    notes = ("negative",)
    defaults = {"modality": "tally", "name": "square", "factory": None, "scale": 1.0, "download": None,
                "on_bad_input": "exclude", "batch": {"max_items": 4},
                "frames": {"layers": None, "dtype": "float32"}}

    def normalize(self, user, where):
        cfg = merge_defaults(user, self.defaults, where)
        if cfg["name"] != "square":
            raise UpstreamError(f"{where}: tally name must be square")
        check_frames(cfg, where)
        return cfg

    def build(self, cfg, device):
        scale = float(cfg["scale"])

        def model(values: list[float]):
            import torch

            x = torch.tensor(values, dtype=torch.float64).unsqueeze(1)
            layer = torch.cat([x, x ** 2, torch.ones_like(x)], dim=1) * scale
            return torch.stack([layer, -layer]).float()
        return model

    def features(self, cfg, model, job):
        from etser.features.dumpio import resolve_layers

        layers = None
        for utt in job.order:
            try:
                values = [float(v) for v in job.table[utt].split()]
            except ValueError:
                yield utt, BadInput(f"not numbers: {job.table[utt]!r}"), {}
                continue
            x = model(values)
            if layers is None:
                layers = resolve_layers(cfg["frames"]["layers"], x.shape[0])
            job.stats["values"] = job.stats.get("values", 0) + len(values)
            yield utt, pool(utt, x, layers), {"negative": sum(v < 0 for v in values)}

    def summary(self, stats, lists):
        return [f"{stats.get('values', 0)} values"]

    def meta(self, cfg, markers, tables, src):
        return {"time_axis": "values", "num_negative": len(tables["negative"]),
                "pooled": "mean and population std of each layer over the values, (L, D)"}


register(Tally())

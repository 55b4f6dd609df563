"""A user-defined upstream with S3PRL's interface, kept outside the etser package.

``build(**args)`` returns a module that takes a list of 1-D 16 kHz float tensors and returns
``{"hidden_states": [(B, T, D), ...]}``: a strided conv (400-sample window, 320 hop: 50 frames/s) and
per-frame layers.  ``get_downsample_rates`` and ``num_frames`` are optional extras that let the recipe
use padded batches.
"""

import torch


class TinyUpstream(torch.nn.Module):
    def __init__(self, dim: int, layers: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv1d(1, dim, kernel_size=400, stride=320)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(layers - 1))

    def get_downsample_rates(self, key=None) -> int:
        return 320

    def num_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - 400) // 320 + 1)

    def forward(self, wavs):
        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).unsqueeze(1)
        h = torch.tanh(self.conv(x)).transpose(1, 2)  # (B, T, D)
        states = [h]
        for layer in self.layers:
            h = torch.tanh(layer(h)) + h
            states.append(h)
        return {"hidden_states": states}


def build(dim: int = 8, layers: int = 3, seed: int = 0) -> TinyUpstream:
    return TinyUpstream(dim, layers, seed)

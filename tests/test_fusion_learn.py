"""Every fusion model learns a label that needs two modalities, on CPU in a few dozen steps.

Four classes = two bits: bit 1 is in the speech features, bit 2 in the text features, visual is noise.  One
modality alone can reach 50 % at best (chance 25 %); the test asks for > 65 % on held-out utterances.
MCTN is the exception by design: it predicts from its source modality (text) only, the others being
translation targets during training, so for MCTN both bits are put in the text (and
test_mctn_predicts_from_the_source_only checks that property).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from etser.models.fusion import FUSION_MODELS
from helpers_fusion import DIMS3, NAMES, small

STEPS = 40
# Frame models step through time in Python: fewer utterances keep the file well under a minute.
N_TRAIN = {"utterance": 256, "frame": 96}
LIGHTER = {"mult": {"layers": 1}}


@pytest.fixture(autouse=True)
def one_thread():
    # several threads on a loaded 2-core machine are many times slower than one
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dataset(n: int, level: str, seed: int, t_max: int = 6, text_only: bool = False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    b1, b2 = (y // 2).float() * 2 - 1, (y % 2).float() * 2 - 1
    lens = torch.randint(2, t_max + 1, (n,), generator=g)
    x = {}
    for i, (m, d) in enumerate(DIMS3.items()):
        directions = torch.linalg.qr(torch.randn(d, 2, generator=torch.Generator().manual_seed(100 + i)))[0].T
        if text_only:
            signal = (b1[:, None] * directions[0] + b2[:, None] * directions[1]) if m == "text" else torch.zeros(n, d)
        else:
            signal = {"speech": b1[:, None] * directions[0], "text": b2[:, None] * directions[0]}.get(m, torch.zeros(n, d))
        if level == "utterance":
            x[m] = signal * 1.5 + 0.5 * torch.randn(n, d, generator=g)
        else:
            x[m] = signal[:, None, :] * 1.5 + 0.8 * torch.randn(n, t_max, d, generator=g)
            x[m][torch.arange(t_max)[None, :] >= lens[:, None]] = 0.0
    return x, ({m: lens for m in DIMS3} if level == "frame" else None), y


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_two_modality_label(name):
    level = FUSION_MODELS[name].level
    model = small(name, output_dim=4, dropout=0.0, **LIGHTER.get(name, {}))
    x, lens, y = dataset(N_TRAIN[level], level, seed=0, text_only=name == "mctn")
    xv, lv, yv = dataset(128, level, seed=1, text_only=name == "mctn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    model.train()
    for _ in range(STEPS):
        out = model(x, lens)
        loss = F.cross_entropy(out.logits, y) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xv, lv).logits.argmax(1) == yv).float().mean())
    assert acc > 0.65, f"{name}: held-out accuracy {acc:.2f} after {STEPS} steps"


def test_mctn_predicts_from_the_source_only():
    model = small("mctn", output_dim=4).eval()
    x, lens, _ = dataset(8, "frame", seed=2)
    base = model(x, lens).logits
    other = {**x, "speech": torch.randn_like(x["speech"]), "visual": torch.randn_like(x["visual"])}
    torch.testing.assert_close(model(other, lens).logits, base)
    assert not torch.allclose(model({**x, "text": torch.randn_like(x["text"])}, lens).logits, base)

"""Shared test fixtures. Area-specific helpers live in tests/helpers_*.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
META_DIR = ROOT.parent / "shared" / "emotiontalk-meta"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# corpus-specific modules (local/emotiontalk/) are imported as `emotiontalk.*`, as path.sh arranges
if str(ROOT / "local") not in sys.path:
    sys.path.insert(1, str(ROOT / "local"))

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def meta_dir() -> Path:
    """The real official EmotionTalk label files (../shared/emotiontalk-meta); skip when absent."""
    if not (META_DIR / "mm.csv").is_file():
        pytest.skip(f"EmotionTalk metadata not found at {META_DIR}")
    return META_DIR


@pytest.fixture(scope="session")
def mini_release(tmp_path_factory) -> Path:
    """The embedded mini corpus (seed 0, scale 1.0: 600 utterances), generated once per test session."""
    from emotiontalk.minicorpus import make_mini_corpus

    out = tmp_path_factory.mktemp("mini") / "release"
    make_mini_corpus(out, seed=0, scale=1.0, progress=False)
    return out


@pytest.fixture(scope="session")
def small_release(tmp_path_factory) -> Path:
    """A quarter-size mini corpus (150 utterances) for the whole-recipe tests, generated once per session."""
    from emotiontalk.minicorpus import make_mini_corpus
    from tests.helpers_faults import MINI_SCALE

    out = tmp_path_factory.mktemp("mini_small") / "release"
    make_mini_corpus(out, seed=0, scale=MINI_SCALE, progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for a test (the machine is shared: one thread is faster than two contended ones for
    tiny models), restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

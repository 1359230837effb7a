"""Test-wide settings: never touch the network; one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine two threads per process were
measured 10-30x slower than one (oversubscription), so tests use one thread.
"""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state; tests that build trainers with other settings need it reset."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)

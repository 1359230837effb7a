"""Fixtures of the miniature world's tests."""

import importlib.util
from pathlib import Path

import pytest

from safediffusion.mini.assets import WEIGHTS_DIR

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "dev" / "mini"


@pytest.fixture
def mini_script():
    """``mini_script(name)``: the module ``scripts/dev/mini/<name>.py``; skips the test until the shipped weights
    have been trained, since every script runs on them."""
    if not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file():
        pytest.skip("shipped weights not trained yet: run `python scripts/dev/mini/pretrain.py`")

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

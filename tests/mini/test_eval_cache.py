"""The base-model evaluation cache: keys, round trip, and that the shipped entry matches the shipped world."""

from __future__ import annotations

import pytest
import torch

from safediffusion.config import load_config
from safediffusion.mini import eval_cache
from safediffusion.mini.report import eval_protocol

PROTOCOL = {"suites": ["mini-i2p"], "num_steps": 20, "guidance_scale": 5.0, "seed": 0, "max_prompts": None,
            "grid_columns": 8}


def _result(rate: float) -> dict:
    return {"mini-i2p": {"unsafe_rate": rate, "per_category": {"gore": rate}}, "protocol": dict(PROTOCOL),
            "images": {"mini-i2p": torch.rand(8, 3, 32, 32)}, "prompts": {"mini-i2p": [f"p{i}" for i in range(8)]}}


def test_key_depends_on_model_and_protocol():
    key = eval_cache.evaluation_key("mini", PROTOCOL)
    assert key == eval_cache.evaluation_key("mini", dict(PROTOCOL))
    assert key != eval_cache.evaluation_key("mini", {**PROTOCOL, "seed": 1})
    assert eval_cache.evaluation_key("runs/mini/final", PROTOCOL) is None, "only the shipped world is cached"


def test_store_load_and_compute_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEDIFFUSION_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return _result(0.5)

    proto = {**PROTOCOL, "seed": 12345}  # not shipped
    first, source = eval_cache.get_or_compute("mini", proto, compute)
    again, source2 = eval_cache.get_or_compute("mini", proto, compute)
    assert (source, source2, len(calls)) == ("computed", "cache", 1)
    assert again["mini-i2p"] == first["mini-i2p"] and again["prompts"] == first["prompts"]
    assert torch.equal(again["images"]["mini-i2p"], first["images"]["mini-i2p"])
    other, source3 = eval_cache.get_or_compute("runs/x/final", proto, lambda: _result(0.1))
    assert source3 == "computed" and other["mini-i2p"]["unsafe_rate"] == 0.1
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_default_jobs_base_evaluation_is_shipped_and_current():
    """Fails after any change to the world's weights or evaluation code until the entry is regenerated."""
    cfg = load_config("configs/mini.yaml")
    key = eval_cache.evaluation_key("mini", eval_protocol(cfg))
    if not (eval_cache.SHIPPED_DIR / f"{key}.json").is_file():
        pytest.fail(f"no shipped base evaluation for key {key}: run `python scripts/dev/mini/base_eval.py` "
                    "(about a minute) and commit src/safediffusion/mini/weights/eval_cache/")
    result, source = eval_cache.load(key)
    assert source == "shipped cache"
    assert set(result["prompts"]) == set(cfg.eval.suites)
    assert 0.35 <= result["mini-i2p"]["unsafe_rate"] <= 0.7

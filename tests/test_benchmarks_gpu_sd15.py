"""benchmarks/gpu_sd15.py: its SD 1.5 configs are the published architectures, and a toy-size CPU run works.

The run's timings are not tested (a shared CPU makes them noise); its correctness columns are: our rollout
reproduces diffusers' pipeline, the first PPO ratio is 1, the update moves the weights, and everything is finite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safediffusion.config import load_config, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_sd15.py"
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_sd15", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_open_clip() -> None:
    if HAS_OPEN_CLIP:
        return
    if os.environ.get("CI"):
        pytest.fail("open_clip is not installed in the CI environment (requirements-dev.txt pins open_clip_torch)")
    pytest.skip("open_clip is not installed (pip install 'safediffusion[open_clip]')")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sd15_configs_have_the_published_sizes():
    """Built on the meta device (no memory, no init): the parameter counts of SD v1.5's parts."""
    bench = _load_script()
    bundle = bench.build_bundle(bench.load_specs(small=False), seed=0, device=torch.device("meta"))
    assert _params(bundle.unet) == 859_520_964
    assert _params(bundle.vae) == 83_653_863
    assert _params(bundle.text_encoder) == 123_060_480  # CLIP ViT-L/14's text tower
    assert bundle.latent_shape(512) == (4, 64, 64) and bundle.vae_scale_factor == 8
    sched = bundle.scheduler
    assert (sched.config.beta_schedule, sched.config.steps_offset, sched.config.set_alpha_to_one) == (
        "scaled_linear", 1, False)


def test_reward_is_vit_h_14():
    _require_open_clip()
    bench = _load_script()
    encoder = bench.build_reward_encoder(bench.load_specs(small=False), "meta")
    assert _params(encoder.model) == 986_109_441  # open_clip ViT-H-14, HPSv2.1's architecture
    assert (encoder.embed_dim, encoder.image_size) == (1024, 224)


def test_defaults_are_the_paper_recipe():
    bench = _load_script()
    args = bench.parse_args([])
    assert (args.resolution, args.steps, args.prompts, args.group, args.guidance) == (512, 50, 4, 16, 5.0)
    paper = load_config(resolve_config_path("sd15-paper")).train
    assert (args.sample_batch_size, args.train_batch_size) == (paper.sample_batch_size, paper.train_batch_size) == (4, 4)
    assert args.timestep_fraction == 0.98
    small = bench.parse_args(["--small", "--group", "3"])
    assert (small.resolution, small.steps, small.prompts, small.group, small.sample_batch_size) == (64, 4, 1, 3, 3)


def test_small_cpu_run_prints_the_table():
    _require_open_clip()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--repeats", "1", "--epochs", "1",
                           "--timestep-fraction", "0.5"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    diff = re.search(r"time ratio ours/diffusers ([\d.]+) .*max\|image diff\| ([\d.e+-]+)", out)
    assert diff, out
    assert float(diff.group(1)) > 0 and float(diff.group(2)) < 1e-4  # same images as diffusers' pipeline
    rows = {m.group(1): m.group(2).split() for m in re.finditer(r"^(full|lora)\s+(.*)$", out, re.MULTILINE)}
    assert set(rows) == {"full", "lora"}, out
    for mode, cols in rows.items():
        params, K, rollout_s, update_s, epoch_s, epoch_paper_s, bare_s, ratio, peak, first, grad, finite = cols
        assert int(K) == 2  # int(4 steps * 0.5)
        assert float(epoch_s) == pytest.approx(float(rollout_s) + float(update_s), abs=0.02)
        assert float(epoch_paper_s) > float(epoch_s)  # extrapolated from K=2 to the paper's K=3
        assert float(bare_s) > 0 and float(ratio) > 0
        assert peak == "-"  # no device memory on a CPU
        assert float(first) < 1e-5, f"{mode}: first PPO ratio off 1 by {first}"
        assert 0 < float(grad) < float("inf"), f"{mode}: no gradient"
        assert finite == "yes"
    trained = {mode: float(cols[0][:-1]) * {"K": 1e3, "M": 1e6}[cols[0][-1]] for mode, cols in rows.items()}
    assert 0 < trained["lora"] < trained["full"] / 10  # LoRA trains far fewer weights

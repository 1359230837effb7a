"""Distributed backends: DDP and FSDP2 take the same optimizer steps with the same clipped gradients (2 CPU
processes, gloo; tests/rl/backend_worker.py); DeepSpeed, FSDP1 and Megatron-LM are refused in one line."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from safediffusion.cli import main
from safediffusion.config import load_config
from safediffusion.errors import UserError
from safediffusion.rl.trainer import GRPOTrainer, check_distributed_backend

ROOT = Path(__file__).resolve().parents[2]
MAX_GRAD_NORM = 0.05  # backend_worker.MAX_GRAD_NORM
# tiny.yaml: 2 prompts x 4 = 8 samples per process, minibatches of 4, K = int(6 * 0.5) = 3 steps each,
# no accumulation: 2 optimizer steps per epoch (not 2 x 3 = 6, one per micro-step)
STEPS_PER_EPOCH = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, out: Path, extra: list[str]) -> dict:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert launcher, "accelerate CLI not found"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if mode == "ddp":
        env["ACCELERATE_USE_CPU"] = "true"
        backend = ["--multi_gpu"]
    else:  # the shipped FSDP2 config (wrap policy, sharded state dict, RAM-efficient loading), on 2 CPU processes
        backend = ["--config_file", str(ROOT / "configs" / "accelerate" / "fsdp.yaml")]
    cmd = [launcher, "launch", *backend, "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           str(Path(__file__).with_name("backend_worker.py")), mode, str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    (out.parent / f"{mode}.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, f"{mode} failed (all of its stderr: {out.parent / f'{mode}.stderr'}): {proc.stderr[-3000:]}"
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert records[0] == records[1], "the two processes disagree"
    return records[0]


def _final_weights(run: Path, lora: bool) -> dict[str, torch.Tensor]:
    name = "pytorch_lora_weights.safetensors" if lora else "unet/diffusion_pytorch_model.safetensors"
    return load_file(str(run / "final" / name))


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-kl"])
def test_fsdp2_steps_and_clips_like_ddp(tmp_path, lora):
    """Per epoch, one AdamW step per minibatch x K timesteps; each on gradients clipped to max_grad_norm; the
    pre-clip norms, the resumed run and the exported weights of FSDP2 equal DDP's on the same data. Full
    fine-tune (the paper's), and LoRA with the KL to the base (the adapter switched off under FSDP2)."""
    extra = ["model.use_lora=true", "train.kl_beta=0.01"] if lora else []
    ddp = _launch("ddp", tmp_path / "ddp", extra)
    fsdp = _launch("fsdp", tmp_path / "fsdp", extra)
    assert ddp["distributed_type"] == "DistributedType.MULTI_CPU"
    assert fsdp["distributed_type"] == "DistributedType.FSDP"
    for rec in (ddp, fsdp):
        # run 1: epoch 1; run 2: resumed from checkpoint-000001 (epoch 2)
        assert rec["start_epoch"] == [0, 1]
        assert rec["global_step"] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
        assert rec["adamw_steps"] == [[STEPS_PER_EPOCH], [2 * STEPS_PER_EPOCH]]  # AdamW's own step counters
        assert len(rec["pre_clip"]) == len(rec["post_clip"]) == 2 * STEPS_PER_EPOCH
        assert min(rec["pre_clip"]) > 1.5 * MAX_GRAD_NORM  # every step is clipped...
        # ...to this (torch divides by total + 1e-6)
        assert rec["post_clip"] == pytest.approx([MAX_GRAD_NORM] * len(rec["post_clip"]), rel=1e-4)
    assert fsdp["pre_clip"] == pytest.approx(ddp["pre_clip"], rel=1e-5)

    weights = {m: _final_weights(tmp_path / m / "run", lora) for m in ("ddp", "fsdp")}
    if lora:  # lora_B starts at 0: what it holds is the update
        base = {k: torch.zeros_like(v) if ".up." in k else v for k, v in weights["ddp"].items()}
        assert any(".up." in k for k in base)
    else:
        from safediffusion.models.tiny import build_tiny_bundle

        base = build_tiny_bundle(seed=0).unet.state_dict()
    assert set(weights["fsdp"]) == set(weights["ddp"]) == set(base)
    moved = max(float((weights["ddp"][k] - base[k]).abs().max()) for k in base)
    diff = max(float((weights["fsdp"][k] - weights["ddp"][k]).abs().max()) for k in base)
    assert moved > 1e-4  # 4 AdamW steps of lr 1e-4
    assert diff < 1e-5, f"FSDP2 weights differ from DDP's by {diff} (the update moved them by {moved})"

    for mode in ("ddp", "fsdp"):
        metrics = [json.loads(x) for x in (tmp_path / mode / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [m["global_step"] for m in metrics] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
        assert all(m["first_log_ratio_max_abs"] == 0.0 and m["first_clipfrac"] == 0.0 for m in metrics)
        assert all(m["kl"] > 0 for m in metrics) if lora else all("kl" not in m for m in metrics)
    assert (tmp_path / "fsdp" / "run" / "checkpoints" / "checkpoint-000002" / "pytorch_model_fsdp_0").is_dir()


@pytest.mark.parametrize("env, what", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed is not supported"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP version 1 is not supported"),
    ({"ACCELERATE_USE_MEGATRON_LM": "true"}, "Megatron-LM is not supported"),
])
def test_unsupported_backend_is_refused_in_one_line(tmp_path, monkeypatch, capsys, env, what):
    """What `accelerate launch --config_file configs/accelerate/<backend>.yaml` sets; refused before any
    Accelerator (which would import DeepSpeed) or model is built, and before the output folder is written."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--output-dir", str(out), "logging.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and what in err
    assert "multi_gpu.yaml" in err or "fsdp_version: 2" in err  # the fix
    assert not out.exists()


@pytest.mark.parametrize("kind, fsdp2", [(DistributedType.DEEPSPEED, False), (DistributedType.FSDP, False),
                                         (DistributedType.MEGATRON_LM, False)])
def test_unsupported_accelerator_is_refused(tmp_path, kind, fsdp2):
    """The same check on an accelerator passed in (e.g. built by a user's script)."""
    fake = SimpleNamespace(distributed_type=kind, is_fsdp2=fsdp2)
    with pytest.raises(UserError, match="not supported"):
        check_distributed_backend(fake)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["logging.tensorboard=false"])
    with pytest.raises(UserError, match="not supported"):
        GRPOTrainer(cfg, tmp_path / "run", accelerator=fake)
    for ok in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        check_distributed_backend(SimpleNamespace(distributed_type=ok, is_fsdp2=False))
    check_distributed_backend(SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True))

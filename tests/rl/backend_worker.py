"""Worker for test_backends.py: one tiny GRPO run under DDP or FSDP2 on 2 CPU processes (gloo), stopped after
epoch 1 and resumed to epoch 2 in the same folder, with the optimizer steps and gradient norms recorded.

    accelerate launch --multi_gpu ... backend_worker.py ddp OUT [key=value ...]
    accelerate launch --config_file configs/accelerate/fsdp.yaml ... backend_worker.py fsdp OUT [key=value ...]

accelerate 1.15 never selects FSDP on a machine without accelerators (``AcceleratorState`` turns
``ACCELERATE_USE_FSDP`` into FSDP only for GPU-like devices), so for ``fsdp`` the worker builds the CPU accelerator
and switches its state to FSDP with the plugin that ``accelerate launch`` configured from the shipped
``fsdp.yaml`` (its env variables), before the trainer prepares the model: from there on, ``fully_shard``, the
DTensor parameters and gradients, the sharded checkpoints and the gathered state dict are accelerate's and
torch's FSDP2 code, as on GPUs (with gloo instead of NCCL).
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from safediffusion.config import load_config
from safediffusion.rl.trainer import GRPOTrainer

MAX_GRAD_NORM = 0.05  # below the tiny run's gradient norms (~0.9 full, ~0.1 LoRA), so every step is clipped
OVERRIDES = ["logging.progress=false", "logging.tensorboard=false", "logging.image_grid_every=100",
             f"train.max_grad_norm={MAX_GRAD_NORM}",
             "train.sample_batch_size=4"]  # = train_batch_size: the rollout's UNet batch shape is the update's


def _accelerator(mode: str) -> Accelerator:
    acc = Accelerator(cpu=True)
    if mode == "fsdp":
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
        assert plugin.fsdp_version == 2
        PartialState().distributed_type = DistributedType.FSDP
        acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = plugin
        assert acc.is_fsdp2
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    assert torch.distributed.get_backend() == "gloo"
    return acc


def _total_norm(tensors: list[torch.Tensor]) -> float:
    norm = torch.nn.utils.get_total_norm(tensors)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _run(mode: str, out: Path, epochs: int, record: dict, extra: list[str]) -> GRPOTrainer:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml",
                      [f"train.epochs={epochs}", *OVERRIDES, *extra])
    acc = _accelerator(mode)
    trainer = GRPOTrainer(cfg, out / "run", accelerator=acc)
    if mode == "fsdp":
        assert type(trainer.unet).__name__.startswith("FSDP"), type(trainer.unet)
        assert all(type(p).__name__ == "DTensor" for p in trainer.params)

    clip = acc.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        norm = clip(params, max_norm, *args, **kwargs)
        record.setdefault("pre_clip", []).append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
        return norm

    acc.clip_grad_norm_ = recording_clip
    adamw = trainer.optimizer.optimizer  # the torch AdamW inside accelerate's wrapper
    step = adamw.step

    update = trainer._update
    in_update = []

    def recording_step(*args, **kwargs):
        if in_update:  # not the zero-gradient step torch.distributed.checkpoint takes to load optimizer state
            # what the optimizer is about to apply: the gradients of the very tensors it updates
            grads = [p.grad for group in adamw.param_groups for p in group["params"] if p.grad is not None]
            record.setdefault("post_clip", []).append(_total_norm(grads) if grads else 0.0)
        return step(*args, **kwargs)

    def recording_update(*args, **kwargs):
        in_update.append(True)
        try:
            return update(*args, **kwargs)
        finally:
            in_update.clear()

    adamw.step = recording_step
    trainer._update = recording_update
    acc.end_training = lambda: None  # keep the process group for the resumed run
    trainer.train()
    acc.wait_for_everyone()  # the main process has released run.lock before the next trainer checks it
    record.setdefault("start_epoch", []).append(trainer.start_epoch)
    record.setdefault("adamw_steps", []).append(sorted({int(s["step"]) for s in adamw.state.values()}))
    record.setdefault("global_step", []).append(trainer.global_step)
    return trainer


def main() -> None:
    mode, out, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    record: dict = {"mode": mode}
    _run(mode, out, 1, record, extra)  # writes checkpoint-000001 and final/
    trainer = _run(mode, out, 2, record, extra)  # a new trainer resumes from checkpoint-000001
    acc = trainer.accelerator
    record["distributed_type"] = str(acc.distributed_type)
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

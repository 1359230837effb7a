"""Worker for test_multiprocess.py, started by `accelerate launch` with 2 CPU processes."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from safediffusion.config import load_config
from safediffusion.rl.trainer import GRPOTrainer


def main() -> None:
    out = Path(sys.argv[1])
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml",
                      ["train.epochs=1", "logging.progress=false", "logging.tensorboard=false"])
    trainer = GRPOTrainer(cfg, out / "run")
    acc = trainer.accelerator
    assert acc.num_processes == 2, f"expected 2 processes, got {acc.num_processes}"
    assert torch.distributed.get_backend() == "gloo"
    before = {k: v.detach().clone() for k, v in trainer._unwrapped().state_dict().items()}
    local = {}
    rollout = trainer._rollout

    def recording_rollout(epoch):
        batch = rollout(epoch)
        local["rewards"] = batch["rewards"].tolist()
        local["prompts"] = batch["prompts"]
        return batch

    trainer._rollout = recording_rollout
    trainer.train()
    after = trainer._unwrapped().state_dict()
    rank = acc.process_index
    save_file({k: v.detach().contiguous() for k, v in after.items()}, str(out / f"rank{rank}.safetensors"))
    changed = max(float((after[k] - before[k]).abs().max()) for k in before)
    (out / f"rank{rank}.json").write_text(json.dumps({**local, "changed": changed, "device": str(acc.device)}))


if __name__ == "__main__":
    main()

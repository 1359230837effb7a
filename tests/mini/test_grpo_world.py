"""A short GRPO run of the default recipe on the miniature world raises the steering reward and lowers the
marker rate of its rollouts (same prompts, same noise before and after). 12 epochs of 64 rollouts; measured
margins on 64 fixed prompts: reward 0.2084 -> 0.2099, marker rate 46.9% -> 42.2% (the full job's 60 epochs cut the
evaluation's rate by more than half)."""

import pytest
import torch

from safediffusion.config import load_config
from safediffusion.mini.assets import WEIGHTS_DIR
from safediffusion.rl.trainer import GRPOTrainer
from safediffusion.sampling.rollout import make_initial_latents, sample_rollout

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file(),
                                reason="shipped weights not trained yet: run `python scripts/dev/mini/pretrain.py`")

OVERRIDES = ["train.epochs=12", "train.prompts_per_epoch=8", "train.group_size=8", "train.train_batch_size=16",
             "data.unsafe_ratio=1.0",
             "logging.progress=false", "logging.tensorboard=false", "eval.enabled=false",
             "train.checkpoint_every=100"]


def _fixed_batch(trainer: GRPOTrainer, prompts: list[str]) -> tuple[float, float]:
    """Mean steering reward and marker rate of one rollout per prompt (fixed noise, the training sampler)."""
    from safediffusion.mini.detector import detect

    bundle, sc = trainer.bundle, trainer.cfg.sampling
    cond = bundle.encode_prompts(prompts)
    latents = make_initial_latents(len(prompts), 1, bundle.latent_shape(), torch.Generator().manual_seed(7))
    gens = [torch.Generator().manual_seed(100 + i) for i in range(len(prompts))]
    bundle.unet = trainer._unwrapped()
    rollout = sample_rollout(bundle, cond, trainer.uncond_embeds, num_steps=sc.num_steps,
                             guidance_scale=sc.guidance_scale, eta=sc.eta, initial_latents=latents, generator=gens,
                             stochastic_steps=trainer.num_window_timesteps)
    with torch.no_grad():
        reward = float(trainer.reward(rollout.images, prompts).mean())
    images = rollout.images.float().clamp(0, 1)
    return reward, sum(detect(im).unsafe for im in images) / len(images)


def test_short_grpo_run_raises_the_reward_and_lowers_the_marker_rate(tmp_path):
    from safediffusion.mini.suites import mini_prompts

    cfg = load_config("configs/mini.yaml", OVERRIDES)
    trainer = GRPOTrainer(cfg, tmp_path / "run")
    prompts = mini_prompts("eval", "unsafe", n=64, seed=1)
    before = _fixed_batch(trainer, prompts)
    trainer.train()
    after = _fixed_batch(trainer, prompts)
    print(f"reward, marker rate before {before}, after {after}")
    assert after[0] > before[0], (before, after)
    assert after[1] < before[1], (before, after)

"""GRPO epoch wall time / the bare UNet compute it contains (target <= 1.15).

One epoch of the trainer does, per process: T sampling steps (one CFG-batched UNet forward each, no grad)
over B = P*G samples in chunks of ``sample_batch_size``, and K = int(T * timestep_fraction) training steps
per minibatch of ``train_batch_size`` (one CFG-batched UNet forward + backward each), plus an AdamW step per
minibatch. The "bare compute" replays exactly those UNet calls on random tensors of the same shapes, with
the same optimizer, and nothing else. The ratio is the trainer's overhead: reward, VAE decode, log-prob math,
bookkeeping, logging.

    python benchmarks/bench_grpo_epoch.py --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from safediffusion.config import load_config  # noqa: E402
from safediffusion.rl.trainer import GRPOTrainer  # noqa: E402


def bare_unet_compute(trainer: GRPOTrainer) -> float:
    cfg = trainer.cfg
    tc, sc = cfg.train, cfg.sampling
    unet = trainer.unet
    bundle = trainer.bundle
    C, h, w = bundle.latent_shape(sc.resolution)
    B = tc.prompts_per_epoch * tc.group_size
    L, D = trainer.uncond_embeds.shape[1:]
    K = trainer.num_train_timesteps
    t = torch.tensor([500])
    start = time.perf_counter()
    unet.eval()
    with torch.no_grad():
        for s in range(0, B, tc.sample_batch_size):
            n = min(tc.sample_batch_size, B - s)
            x, ctx = torch.randn(2 * n, C, h, w), torch.randn(2 * n, L, D)
            for _ in range(sc.num_steps):
                _ = unet(x, t.expand(2 * n), ctx).sample
    unet.train()
    for s in range(0, B, tc.train_batch_size):
        n = min(tc.train_batch_size, B - s)
        for _ in range(K):
            x, ctx = torch.randn(2 * n, C, h, w), torch.randn(2 * n, L, D)
            unet(x, t.expand(2 * n), ctx).sample.float().pow(2).mean().backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    unet.eval()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from safediffusion.config import resolve_config_path

    overrides = ["logging.progress=false", "logging.tensorboard=false", "train.checkpoint_every=1000",
                 "train.prompts_per_epoch=2", "train.group_size=8", "train.sample_batch_size=16",
                 "train.train_batch_size=8", "sampling.num_steps=10", *args.overrides]
    cfg = load_config(resolve_config_path(args.config), overrides + [f"train.epochs={args.epochs}"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(cfg, tmp)
        epoch_times, bare_times = [], []
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            batch = trainer._rollout(epoch)
            trainer._update(epoch, batch, trainer._advantages(batch))
            epoch_times.append(time.perf_counter() - t0)
            bare_times.append(bare_unet_compute(trainer))
    # the first epoch warms caches up on both sides; report medians over the rest when there are any
    e = statistics.median(epoch_times[1:] or epoch_times)
    b = statistics.median(bare_times[1:] or bare_times)
    tc = cfg.train
    print(f"config={args.config} B={tc.prompts_per_epoch * tc.group_size} T={cfg.sampling.num_steps} "
          f"K={trainer.num_train_timesteps} threads={args.threads}")
    print(f"epoch wall time      : {e:.3f} s (median of {len(epoch_times[1:] or epoch_times)})")
    print(f"bare UNet fwd(+bwd)  : {b:.3f} s")
    print(f"ratio epoch / bare   : {e / b:.3f}   (target <= 1.15)")


if __name__ == "__main__":
    main()

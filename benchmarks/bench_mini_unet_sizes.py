"""Cost of bigger miniature-world UNets relative to the shipped one (offline, CPU).

    python benchmarks/bench_mini_unet_sizes.py --threads 2

The shipped UNet (``safediffusion.mini.architectures.build_unet``: blocks (32, 64), 1.1 M parameters) and
wider variants of the same layout on 8x8x4 latents. For each it times (median of ``--repeats`` after
``--warmup``):

- ``train``: one AdamW step of the pretraining objective at batch 64 (forward, backward, update);
- ``sample``: one guided denoising call as in evaluation (batch 128 = 64 images x {uncond, cond}, no grad);

and prints both as ratios to the shipped UNet, i.e. how much longer pretraining and the default job's
evaluation would take with that UNet.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

from safediffusion.mini.architectures import build_unet

VARIANTS = {"(48, 96)": (48, 96), "(64, 128)": (64, 128)}


def variant(channels: tuple[int, ...]) -> UNet2DConditionModel:
    """The shipped layout with other block widths."""
    cfg = dict(build_unet().config)
    cfg["block_out_channels"] = channels
    return UNet2DConditionModel.from_config(cfg)


def median_time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(unet: UNet2DConditionModel, repeats: int, warmup: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    z, ctx = torch.randn(64, 4, 8, 8, generator=g), torch.randn(64, 32, unet.config.cross_attention_dim, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def train_step():
        loss = (unet(z, t, ctx).sample - z).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    z2, ctx2, t2 = torch.cat([z, z]), torch.cat([ctx, ctx]), torch.full((128,), 500)

    @torch.no_grad()
    def sample_step():
        unet(z2, t2, ctx2)

    return median_time(train_step, repeats, warmup), median_time(sample_step, repeats, warmup)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"shipped (32, 64)": build_unet(), **{k: variant(c) for k, c in VARIANTS.items()}}
    base = None
    print(f"{'UNet':18s} {'params':>8s} {'train s':>8s} {'sample s':>9s} {'train x':>8s} {'sample x':>9s}")
    for name, unet in models.items():
        tr, sa = measure(unet, args.repeats, args.warmup)
        base = base or (tr, sa)
        n = sum(q.numel() for q in unet.parameters()) / 1e6
        print(f"{name:18s} {n:7.2f}M {tr:8.3f} {sa:9.3f} {tr / base[0]:8.2f} {sa / base[1]:9.2f}", flush=True)


if __name__ == "__main__":
    main()

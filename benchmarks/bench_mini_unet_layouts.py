"""Cost of the miniature world's UNet against other layouts (offline, CPU).

    python benchmarks/bench_mini_unet_layouts.py --threads 2

Layouts, each on its own latent grid (the VAE's downsampling factor sets the grid):

- ``shipped``: ``safediffusion.mini.architectures.build_unet`` (16x16x4 latents, blocks (32, 64, 64));
- ``8x8 (32, 64)``: the world's first UNet (until the VAE went from factor 4 to factor 2), cross-attention in
  both blocks;
- ``8x8 (64, 128)``: that layout widened, about the shipped UNet's cost spent on width instead of resolution;
- the 16x16 variants of ``safediffusion.mini.architectures.UNET_VARIANTS`` (``attn16``, ``wide``, ``deep``,
  ``wide4x4``): their ``train`` ratios set the steps each gets in ``scripts/dev/mini/unet_sweep.py``.

For each it times (median of ``--repeats`` after ``--warmup``):

- ``train``: one AdamW step of the pretraining objective at batch 64 (forward, backward, update);
- ``sample``: one guided denoising call as in evaluation (batch 128 = 64 images x {uncond, cond}, no grad);

and prints both as ratios to the shipped UNet: how much pretraining, GRPO and evaluation cost per step
relative to what the repository ships.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

from safediffusion.mini.architectures import TEXT_WIDTH, UNET_VARIANTS, build_unet


def latent8(channels: tuple[int, int]) -> UNet2DConditionModel:
    """The 8x8-latent layout: two cross-attention blocks of the given widths."""
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=16,
    )


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
    size = unet.config.sample_size
    z = torch.randn(64, 4, size, size, generator=g)
    ctx = torch.randn(64, 32, unet.config.cross_attention_dim, generator=g)
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
    models = {"shipped 16x16": build_unet(), "8x8 (32, 64)": latent8((32, 64)), "8x8 (64, 128)": latent8((64, 128))}
    models.update({f"16x16 {name}": build_unet(variant=name) for name in UNET_VARIANTS if name != "shipped"})
    base = None
    print(f"{'UNet':16s} {'params':>8s} {'train s':>8s} {'sample s':>9s} {'train x':>8s} {'sample x':>9s}")
    for name, unet in models.items():
        tr, sa = measure(unet, args.repeats, args.warmup)
        base = base or (tr, sa)
        n = sum(q.numel() for q in unet.parameters()) / 1e6
        print(f"{name:16s} {n:7.2f}M {tr:8.3f} {sa:9.3f} {tr / base[0]:8.2f} {sa / base[1]:9.2f}", flush=True)


if __name__ == "__main__":
    main()

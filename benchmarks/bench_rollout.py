"""Rollout speed: ``safediffusion.sampling.sample_rollout`` vs diffusers' ``StableDiffusionPipeline.__call__``.

Same tiny random model, steps, batch, eta and CFG scale, same initial latents and noise generator; both
decode to ``[B, 3, H, W]`` tensors (``output_type="pt"``, progress bar off). Our rollout additionally records
the trajectory and the per-step log-probabilities. Runs are interleaved (ours, theirs, ours, ...) so that
load changes on a shared machine hit both alike; the script prints the median wall time of each and the
ratio ours / diffusers (target <= 1.05), plus the max image difference as a sanity check.

    python benchmarks/bench_rollout.py --steps 20 --batch 8 --repeats 7 --latent-sizes 8 16 32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from diffusers import StableDiffusionPipeline

from safediffusion.models.tiny import build_tiny_bundle, build_tiny_unet
from safediffusion.sampling import make_initial_latents, sample_rollout


def bench(latent_size: int, steps: int, batch: int, repeats: int, eta: float, guidance: float) -> dict:
    bundle = build_tiny_bundle(seed=0)
    if latent_size != bundle.latent_size:
        torch.manual_seed(0)
        bundle.unet = build_tiny_unet(sample_size=latent_size).eval()
    cond = bundle.encode_prompts([f"prompt {i}" for i in range(batch)])
    uncond = bundle.encode_prompts([""]).expand(batch, -1, -1)
    x_T = make_initial_latents(batch, 1, bundle.latent_shape(), torch.Generator().manual_seed(0))
    pipe = StableDiffusionPipeline(bundle.vae, bundle.text_encoder, bundle.tokenizer, bundle.unet,
                                   copy.deepcopy(bundle.scheduler), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def ours() -> torch.Tensor:
        return sample_rollout(bundle, cond, uncond, num_steps=steps, guidance_scale=guidance, eta=eta,
                              initial_latents=x_T, generator=torch.Generator().manual_seed(1)).images

    @torch.no_grad()
    def theirs() -> torch.Tensor:
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=x_T, num_inference_steps=steps,
                    guidance_scale=guidance, eta=eta, generator=torch.Generator().manual_seed(1),
                    output_type="pt").images

    diff = (ours() - theirs()).abs().max().item()  # also the warm-up
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"latent": latent_size, "image": bundle.image_size, **med, "ratio": med["ours"] / med["diffusers"],
            "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--latent-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"steps={args.steps} batch={args.batch} repeats={args.repeats} eta={args.eta} cfg={args.guidance} "
          f"threads={torch.get_num_threads()}")
    print(f"{'latent':>6} {'image':>6} {'ours s':>9} {'diffusers s':>12} {'ratio':>7} {'max|diff|':>10}")
    for size in args.latent_sizes:
        r = bench(size, args.steps, args.batch, args.repeats, args.eta, args.guidance)
        print(f"{r['latent']:>6} {r['image']:>6} {r['ours']:>9.4f} {r['diffusers']:>12.4f} {r['ratio']:>7.3f} "
              f"{r['max_abs_diff']:>10.2e}")


if __name__ == "__main__":
    main()

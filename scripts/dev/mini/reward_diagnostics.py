"""Does the reward see the markers? Within-group diagnostics of the GRPO rewards on the miniature world.

    python scripts/dev/mini/reward_diagnostics.py [--config mini] [--prompts 32] [--group-size 8] [--alphas 0.5,1,2]
    python scripts/dev/mini/reward_diagnostics.py --model runs/table/runs/negative/final   # a trained model

Samples ``G`` rollouts exactly as training does (model, DDIM steps, eta, CFG and reward encoder and anchors
from ``--config``; ``configs/mini.yaml``: eta = 1, CFG 5, 10 steps) for each of ``N`` unsafe *train* prompts,
judges every image with the exact detector (marker or not) and scores it with each reward of the ablation
table: steering at each ``--alphas`` value (default 0.5 / 0.75 / 1.0), the projection mode at 0.5, plain CLIP
alignment (alpha 0) and negative-only.

GRPO only learns from differences inside a group, so per reward it prints:

* ``mixed groups``: fraction of groups that hold both marker and clean images (only these can teach the
  policy to drop markers);
* ``gap``: mean over mixed groups of ``mean r(clean) - mean r(marker)`` (> 0: the reward prefers clean);
* ``AUC``: probability that a clean image out-scores a marker image of the same group (0.5 = blind);
* ``adv gap``: the same gap in GRPO advantages ``(r - mean) / (std + 1e-4)``, clipped to +-2.5.

Writes ``OUT/reward_diagnostics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from safediffusion.config import load_config, resolve_config_path  # noqa: E402
from safediffusion.mini.detector import detect  # noqa: E402
from safediffusion.mini.diagnostics import group_stats  # noqa: E402
from safediffusion.mini.suites import mini_prompts  # noqa: E402
from safediffusion.mini.table import parse_alphas  # noqa: E402
from safediffusion.models.bundle import load_bundle  # noqa: E402
from safediffusion.rewards import build_reward  # noqa: E402
from safediffusion.rewards.loading import load_encoder  # noqa: E402
from safediffusion.sampling.rollout import make_initial_latents, sample_rollout  # noqa: E402

FIXED_REWARDS = {
    "projection a=0.5": {"name": "steering", "alpha": 0.5, "mode": "projection"},
    "clip (a=0)": {"name": "clip"},
    "negative": {"name": "negative"},
}


def reward_rows(alphas: list[float]) -> dict[str, dict]:
    """The rewards to score: steering at each alpha, then the projection mode, plain CLIP and negative-only."""
    return {**{f"steering a={a:g}": {"name": "steering", "alpha": a} for a in alphas}, **FIXED_REWARDS}


def _alphas(text: str) -> list[float]:
    """The table's alpha list (:func:`safediffusion.mini.table.parse_alphas`) without 0: the plain CLIP row."""
    values = parse_alphas(text)
    if 0.0 in values:
        raise argparse.ArgumentTypeError(f"positive values (alpha 0 is the plain CLIP row); got {text!r}")
    return list(values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mini", help="training config whose model, sampling and reward to use")
    p.add_argument("--model", default=None,
                   help="model to sample from instead of the config's (e.g. a trained run's OUTPUT/final)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/reward_diagnostics")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--alphas", type=_alphas, default=[0.5, 0.75, 1.0],
                   help="steering alphas to score, comma-separated (default 0.5,0.75,1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = load_config(resolve_config_path(args.config))
    sc = cfg.sampling
    model = args.model or cfg.model.pretrained
    bundle = load_bundle(model)
    prompt_list = mini_prompts("train", "unsafe", n=args.prompts, seed=args.seed)
    prompts = [q for q in prompt_list for _ in range(args.group_size)]
    gen = torch.Generator().manual_seed(args.seed)
    latents = make_initial_latents(len(prompt_list), args.group_size, bundle.latent_shape(), generator=gen)
    step_gens = [torch.Generator().manual_seed(args.seed * 100_000 + i) for i in range(len(prompts))]
    with torch.no_grad():
        rollout = sample_rollout(bundle, bundle.encode_prompts(prompts), bundle.encode_prompts([""]),
                                 num_steps=sc.num_steps, guidance_scale=sc.guidance_scale, eta=sc.eta,
                                 initial_latents=latents, generator=step_gens,
                                 batch_size=cfg.train.sample_batch_size, progress=True)
    images = rollout.images.float().clamp(0, 1)
    marker = torch.tensor([detect(im).unsafe for im in images])
    encoder = load_encoder(cfg.reward, base_dir=cfg.base_dir)
    results: dict = {"prompts": args.prompts, "group_size": args.group_size, "config": args.config, "model": model,
                     "marker_rate": float(marker.float().mean()), "rewards": {}}
    print(f"{len(images)} samples, marker rate {results['marker_rate']:.1%}")
    print(f"{'reward':16s} {'mixed groups':>12s} {'gap':>8s} {'AUC':>6s} {'adv gap':>8s} {'group std':>9s}")
    for name, fields in reward_rows(args.alphas).items():
        reward_cfg = dataclasses.replace(cfg.reward, **{"mode": "all", **fields})
        with torch.no_grad():
            r = build_reward(reward_cfg, encoder=encoder, base_dir=cfg.base_dir)(images, prompts).float().cpu()
        s = group_stats(r, marker, args.group_size)
        results["rewards"][name] = s
        print(f"{name:16s} {s['mixed_groups']:12.2f} {s['gap']:8.4f} {s['auc']:6.3f} {s['adv_gap']:8.3f} "
              f"{s['within_group_std']:9.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_diagnostics.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

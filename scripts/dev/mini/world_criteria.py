"""Print the miniature world's acceptance criteria (``safediffusion.mini.criteria``), measured on its weights.

    python scripts/dev/mini/world_criteria.py                       # the shipped weights, every row (5.5 min here)
    python scripts/dev/mini/world_criteria.py --weights DIR         # DIR/clip, DIR/reward_clip, DIR/pipeline
    python scripts/dev/mini/world_criteria.py --skip-base           # the CLIP rows only (rendered images)

Rows 1-3 and 5-8 need only the CLIPs and rendered scenes; rows 4 and 11 sample ``--prompts`` unsafe training
prompts ``--group-size`` times each exactly as GRPO does (the ``mini`` config's sampler: 10 DDIM steps,
eta = 1, CFG 5); rows 9-10 evaluate the base model with the evaluation protocol (DDIM eta = 0, 20 steps,
CFG 5) on the headline mix (mini-i2p), balanced explicit/implicit sets (3 seeds) and mini-GenEval.
Writes ``OUT/world_criteria.json`` and ``OUT/world_criteria.md``; exit code 1 when a measured row is unmet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from safediffusion.mini import criteria  # noqa: E402
from safediffusion.mini.assets import WEIGHTS_DIR  # noqa: E402
from safediffusion.mini.clip import load_mini_clip  # noqa: E402


def rollout_rows(pipeline: Path, reward_clip: Path, prompts: int, group_size: int, seed: int) -> dict:
    """Rows 4 and 11: base rollouts of unsafe training prompts, scored by the reward CLIP."""
    from safediffusion.config import load_config, resolve_config_path
    from safediffusion.mini.detector import detect
    from safediffusion.mini.diagnostics import group_stats
    from safediffusion.mini.suites import mini_prompts
    from safediffusion.models.bundle import load_bundle
    from safediffusion.rewards import build_reward
    from safediffusion.rewards.encoders import HFClipEncoder
    from safediffusion.sampling.rollout import make_initial_latents, sample_rollout

    cfg = load_config(resolve_config_path("mini"))
    bundle = load_bundle(str(pipeline))
    prompt_list = mini_prompts("train", "unsafe", n=prompts, seed=seed)
    repeated = [q for q in prompt_list for _ in range(group_size)]
    latents = make_initial_latents(len(prompt_list), group_size, bundle.latent_shape(),
                                   generator=torch.Generator().manual_seed(seed))
    step_gens = [torch.Generator().manual_seed(seed * 100_000 + i) for i in range(len(repeated))]
    with torch.no_grad():
        rollout = sample_rollout(bundle, bundle.encode_prompts(repeated), bundle.encode_prompts([""]),
                                 num_steps=cfg.sampling.num_steps, guidance_scale=cfg.sampling.guidance_scale,
                                 eta=cfg.sampling.eta, initial_latents=latents, generator=step_gens,
                                 batch_size=cfg.train.sample_batch_size, progress=True)
        images = rollout.images.float().clamp(0, 1)
        marker = torch.tensor([detect(im).unsafe for im in images])
        encoder = HFClipEncoder.from_pretrained(str(reward_clip))
        alignment = build_reward(dataclasses.replace(cfg.reward, name="clip"), encoder=encoder)(images, repeated)
        steering = build_reward(dataclasses.replace(cfg.reward, name="steering", alpha=0.5, mode="all"),
                                encoder=encoder)(images, repeated)
    align_stats = group_stats(alignment.float(), marker, group_size)
    steer_stats = group_stats(steering.float(), marker, group_size)
    return {"within_group_std": align_stats["within_group_std"], "steering_auc": steer_stats["auc"],
            "steering_gap": steer_stats["gap"], "steering_mixed_groups": steer_stats["mixed_groups"],
            "steering_within_group_std": steer_stats["within_group_std"],
            "alignment_auc": align_stats["auc"], "rollout_marker_rate": float(marker.float().mean()),
            "rollouts": len(repeated)}


#: Row 9's ratio pools balanced sets of three seeds (720 images): one set of 240 estimates it with a standard
#: error of about 0.2, half the width of the target interval (docs/miniature_world.md).
BALANCED_SEEDS = (1, 2, 3)


def base_rows(pipeline: Path, clip_dir: Path, max_prompts: int | None = None) -> dict:
    """Rows 9 and 10: the headline mix, balanced explicit/implicit sets and mini-GenEval."""
    from safediffusion.mini.evaluate import evaluate_mini, generate, score_i2p
    from safediffusion.mini.suites import build_suite, mini_i2p_suite
    from safediffusion.models.bundle import load_bundle

    bundle = load_bundle(str(pipeline))
    result = evaluate_mini(bundle, clip=load_mini_clip(clip_dir), max_prompts=max_prompts)
    headline = build_suite("mini-i2p", max_prompts=max_prompts)
    balanced = [r for seed in BALANCED_SEEDS
                for r in mini_i2p_suite(min(80, max_prompts or 80), seed=seed, explicit_share=0.5)]
    scored = score_i2p(balanced, generate(bundle, [r.prompt for r in balanced], [r.seed for r in balanced]))
    explicit, implicit = scored["explicit"], scored["implicit"]
    i2p, geneval = result["mini-i2p"], result["mini-geneval"]
    return {"explicit_share": sum(r.cue == "explicit" for r in headline) / len(headline),
            "explicit_implicit_ratio": explicit / implicit if implicit else float("inf"),
            "balanced_explicit": explicit, "balanced_implicit": implicit,
            "unsafe_rate": i2p["unsafe_rate"],
            "headline_explicit": i2p["explicit"], "headline_implicit": i2p["implicit"],
            "headline_per_category": i2p["per_category"], "geneval": geneval["accuracy"],
            "geneval_per_task": geneval["per_task"], "geneval_marker_rate": geneval["marker_rate"],
            "fd": geneval.get("fd"), "clip_score": geneval.get("clip_score")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with clip/, reward_clip/ and pipeline/")
    p.add_argument("--n", type=int, default=2000, help="held-out pairs for rows 2 and 5")
    p.add_argument("--renders", type=int, default=300, help="rendered scenes per cell for rows 3, 6 and 8")
    p.add_argument("--prompts", type=int, default=48, help="unsafe training prompts for rows 4 and 11")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-base", action="store_true", help="only the rows measured on rendered images")
    p.add_argument("--max-prompts", type=int, default=None,
                   help="rows 9-10 on at most this many prompts per cell (default: the full suites)")
    p.add_argument("--out", default="runs/world_criteria")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = Path(args.weights)
    t0 = time.time()
    reward_model, reward_tok = load_mini_clip(weights / "reward_clip")
    gen_model, gen_tok = load_mini_clip(weights / "clip")
    values: dict = {"logit_scale": float(reward_model.logit_scale.detach().exp())}
    values.update(criteria.paired_metrics(reward_model, reward_tok, args.n))
    values["missing_object_drop"] = criteria.missing_object_drop(reward_model, reward_tok, args.renders)
    values["zero_shot_shape"] = criteria.zero_shot_shape(gen_model, gen_tok, max(1, args.renders // 3))
    values.update(criteria.safety_direction_metrics(reward_model, reward_tok, args.renders))
    if not args.skip_base:
        values.update(rollout_rows(weights / "pipeline", weights / "reward_clip", args.prompts, args.group_size,
                                   args.seed))
        values.update(base_rows(weights / "pipeline", weights / "clip", args.max_prompts))
    rows = criteria.check(values)
    table = criteria.format_table(rows)
    print(table)
    print(f"({time.time() - t0:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world_criteria.json").write_text(json.dumps({"weights": str(weights), "values": values,
                                                         "met": {c.key: m for c, _, m in rows}}, indent=2))
    (out / "world_criteria.md").write_text(table + "\n")
    return 1 if any(m is False for _, _, m in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

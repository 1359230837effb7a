"""Which denoising steps carry the GRPO signal? A first-order check on the shipped miniature model.

One batch of training rollouts (``configs/mini.yaml``: DDIM eta 1, CFG 5) on unsafe train prompts, with group
advantages from a reward. For each timestep window (the first ``w * T`` steps of the chain), the GRPO policy
gradient ``g = -grad L_clip`` (at ratio 1, the plain group-baselined policy gradient) is computed on the
LoRA weights, and the model is moved along the unit direction ``g / |g|`` by ``eps``. Held-out rollouts
(other prompts' noise, same prompts) then measure the marker rate (exact detector) and the mean steering
reward. If the gradient is informative, moving along ``+g`` lowers the marker rate.

    python scripts/dev/mini/gradient_diagnostics.py                       # detector (oracle) advantages
    python scripts/dev/mini/gradient_diagnostics.py --reward steering     # the default job's reward

Writes ``OUT/gradient_diagnostics.json`` and prints one line per (window, eps).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it at import

import torch  # noqa: E402

from safediffusion.config import load_config, resolve_config_path  # noqa: E402
from safediffusion.mini.detector import detect  # noqa: E402
from safediffusion.mini.suites import mini_prompts  # noqa: E402
from safediffusion.rl.advantages import group_advantages  # noqa: E402
from safediffusion.rl.loss import ppo_clip_loss  # noqa: E402
from safediffusion.rl.trainer import GRPOTrainer  # noqa: E402
from safediffusion.sampling.rollout import make_initial_latents, sample_rollout  # noqa: E402

CONFIG = resolve_config_path("mini")  # the shipped configs/mini.yaml


def marker_reward(images: torch.Tensor) -> torch.Tensor:
    """``-1`` for an image with any marker, else ``0`` (the exact detector): ``[N, 3, H, W] -> [N]``."""
    return torch.tensor([-float(detect(im).unsafe) for im in images.float().cpu()])


def policy_gradient(trainer: GRPOTrainer, batch: dict, advantages: torch.Tensor, steps: list[int]) -> list[torch.Tensor]:
    """``-grad`` of the PPO-clip loss at ratio 1, averaged over the given step indices (one entry per param)."""
    rollout = batch["rollout"]
    trainer.unet.train()
    for p in trainer.params:
        p.grad = None
    for j in steps:
        t = rollout.timesteps[j].repeat(rollout.batch_size)
        log_prob, _, _ = trainer._transition(trainer.unet, rollout.latents[:, j], rollout.next_latents[:, j], t,
                                             batch["cond"])
        loss, _ = ppo_clip_loss(log_prob, rollout.log_probs[:, j], advantages, trainer.cfg.train.clip_range)
        (loss / len(steps)).backward()
    trainer.unet.eval()
    return [-(p.grad if p.grad is not None else torch.zeros_like(p)) for p in trainer.params]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward", choices=["detector", "steering"], default="detector",
                    help="advantages from the exact detector (an oracle) or from the default job's steering reward")
    ap.add_argument("--prompts", type=int, default=4, help="unsafe train prompts")
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--windows", default="1.0,0.4", help="timestep windows (fractions of the chain, from its start)")
    ap.add_argument("--eps", default="0,0.3,1,3", help="step lengths along the unit gradient direction")
    ap.add_argument("--out", default="runs/gradient_diag")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    prompts = mini_prompts("train", "unsafe", n=args.prompts, seed=3)
    prompt_file = out / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n")
    G = args.group_size
    cfg = load_config(CONFIG, [f"data.prompts={prompt_file}", "data.unsafe_prompts=null",
                               f"train.prompts_per_epoch={args.prompts}", f"train.group_size={G}",
                               f"train.sample_batch_size={min(64, args.prompts * G)}", "logging.progress=false",
                               "logging.tensorboard=false"])
    trainer = GRPOTrainer(cfg, out / "run")
    steering = trainer.reward
    t0 = time.perf_counter()
    batch = trainer._rollout(0)
    rewards = marker_reward(batch["rollout"].images) if args.reward == "detector" else batch["rewards"]
    advantages = group_advantages(rewards, G, cfg.train.adv_eps, cfg.train.adv_clip_max)
    T = batch["rollout"].num_steps

    held_prompts = batch["prompts"]
    held_cond = trainer.bundle.encode_prompts(held_prompts)
    held_latents = make_initial_latents(len(held_prompts), 1, trainer.bundle.latent_shape(),
                                        torch.Generator().manual_seed(10_007))
    base = [p.detach().clone() for p in trainer.params]

    def held_out() -> tuple[float, float]:
        trainer.bundle.unet = trainer._unwrapped()
        gens = [torch.Generator().manual_seed(20_000 + i) for i in range(len(held_prompts))]
        r = sample_rollout(trainer.bundle, held_cond, trainer.uncond_embeds, num_steps=cfg.sampling.num_steps,
                           guidance_scale=cfg.sampling.guidance_scale, eta=cfg.sampling.eta,
                           initial_latents=held_latents, generator=gens, batch_size=64)
        with torch.no_grad():
            steer = float(steering(r.images, held_prompts).mean())
        return float(-marker_reward(r.images).mean()), steer

    results = {"reward": args.reward, "prompts": prompts, "group_size": G, "num_steps": T,
               "train_marker_rate": float(-marker_reward(batch["rollout"].images).mean()), "windows": []}
    for window in (float(w) for w in args.windows.split(",")):
        steps = list(range(max(1, round(T * window))))
        grad = policy_gradient(trainer, batch, advantages, steps)
        norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grad)))
        rows = []
        for eps in (float(e) for e in args.eps.split(",")):
            with torch.no_grad():
                for p, b0, g in zip(trainer.params, base, grad):
                    p.copy_(b0 + eps * g / norm)
            marker_rate, steer = held_out()
            rows.append({"eps": eps, "marker_rate": marker_rate, "steering_reward": steer})
            print(f"window {window:g} (steps {steps[0]}-{steps[-1]} of {T}), |g| {norm:.2e}, eps {eps:g}: "
                  f"held-out marker rate {marker_rate:.3f}, steering reward {steer:.4f}", flush=True)
        with torch.no_grad():
            for p, b0 in zip(trainer.params, base):
                p.copy_(b0)
        results["windows"].append({"window": window, "steps": steps, "grad_norm": norm, "rows": rows})
    results["seconds"] = time.perf_counter() - t0
    (out / "gradient_diagnostics.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'gradient_diagnostics.json'} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

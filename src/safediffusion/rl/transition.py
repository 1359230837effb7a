"""The policy's Gaussian transition for stored rollout steps: log-probability, mean and std.

For the PPO update we need, per stored transition ``x_t -> x_{t-1}`` (per-sample timesteps ``t [B]``):

    log pi_theta(x_{t-1} | x_t, c)   [B]      (the PPO ratio's numerator)
    mu_theta(x_t, t, c)              [B,C,h,w] (for the Gaussian KL to the reference policy)
    sigma_t = eta * sigma_DDIM(t)    [B,1,1,1]

all from ONE guided UNet call, with the same math as the rollout (so the first ratio is exactly 1).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from safediffusion.sampling.rollout import guided_transition, make_sampling_scheduler

_SCHEDULERS: dict[tuple[str, int], DDIMScheduler] = {}


def _sampling_scheduler(scheduler: DDIMScheduler, num_steps: int) -> DDIMScheduler:
    key = (repr(sorted(scheduler.config.items())), num_steps)
    if key not in _SCHEDULERS:
        _SCHEDULERS[key] = make_sampling_scheduler(scheduler, num_steps)
    return _SCHEDULERS[key]


def policy_transition(unet: torch.nn.Module, scheduler: DDIMScheduler, latents: torch.Tensor,
                      next_latents: torch.Tensor, timesteps: torch.Tensor, cond_embeds: torch.Tensor,
                      uncond_embeds: torch.Tensor | None, *, guidance_scale: float, eta: float,
                      num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_prob [B], mean [B, C, h, w], std [B, 1, 1, 1])``; differentiable w.r.t. the UNet."""
    transition = guided_transition(unet, _sampling_scheduler(scheduler, num_steps), latents, timesteps.cpu(),
                                   cond_embeds, uncond_embeds, guidance_scale, eta)
    return transition.log_prob(next_latents), transition.mean, transition.std_like(latents)

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

from safediffusion.sampling.ddim import ddim_coefficients, ddim_step_with_logprob
from safediffusion.sampling.guidance import guided_noise_pred
from safediffusion.sampling.rollout import make_sampling_scheduler

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
    sched = _sampling_scheduler(scheduler, num_steps)
    t_cpu = timesteps.cpu()
    noise_pred = guided_noise_pred(unet, latents, timesteps.to(latents.device), cond_embeds, uncond_embeds,
                                   guidance_scale)
    _, log_prob = ddim_step_with_logprob(sched, noise_pred, t_cpu, latents, eta, prev_sample=next_latents)
    # The mean is the step taken with zero noise: x_{t-1} = mean + std * 0.
    zeros = torch.zeros_like(latents, dtype=torch.float32)
    mean, _ = ddim_step_with_logprob(sched, noise_pred, t_cpu, latents.float(), eta, variance_noise=zeros)
    std = ddim_coefficients(sched, t_cpu, eta).std
    return log_prob, mean, std.to(latents.device).view(-1, *([1] * (latents.ndim - 1)))

"""Batched stochastic DDIM rollouts with classifier-free guidance, and the log-probability of their steps.

A rollout of ``B`` samples over ``T`` DDIM steps (timesteps ``t_0 > t_1 > ... > t_{T-1}``) records the chain
``x_{t_0} -> x_{t_1} -> ... -> x_final`` as one trajectory tensor ``[B, T + 1, C, h, w]``, the per-step
log-probabilities ``log pi(x_{k+1} | x_k, c)`` ``[B, T]`` (see :mod:`safediffusion.sampling.ddim` for the
Gaussian and its per-dimension mean), and the decoded images ``[B, 3, H, W]`` in [0, 1].

GRPO groups: sample ``i`` belongs to prompt ``i // group_size`` (:func:`make_initial_latents`).

The PPO update recomputes ``log pi_theta(x_{k+1} | x_k, c)`` for stored transitions with
:func:`transition_log_prob`, which runs the very same guided UNet call and DDIM step math; with unchanged
weights it reproduces the rollout's ``log_probs``, so the first importance ratio is exactly 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from safediffusion.errors import UserError
from safediffusion.models.bundle import ModelBundle
from safediffusion.sampling.ddim import (
    DDIMTransition,
    check_eta,
    check_nonzero_noise,
    ddim_coefficients,
    ddim_step_with_logprob,
    ddim_transition,
)
from safediffusion.sampling.guidance import guided_noise_pred

Generators = torch.Generator | Sequence[torch.Generator] | None


def make_sampling_scheduler(scheduler: DDIMScheduler, num_steps: int,
                            device: torch.device | str | None = None) -> DDIMScheduler:
    """A fresh ``DDIMScheduler`` with ``scheduler``'s config and ``set_timesteps(num_steps)`` applied.

    The caller's scheduler is never mutated. ``timesteps`` follow the config's ``timestep_spacing`` and
    ``steps_offset`` exactly as diffusers computes them (SD v1.x: ``leading`` + offset 1, so 50 steps are
    ``981, 961, ..., 1``).
    """
    if num_steps < 1:
        raise UserError(f"num_steps must be >= 1, got {num_steps}", "set sampling.num_steps to a positive integer")
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(num_steps, device=device)
    return sched


def make_initial_latents(
    num_prompts: int,
    group_size: int,
    shape: tuple[int, int, int],
    generator: torch.Generator | None = None,
    shared_per_group: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial noise ``x_T ~ N(0, I)`` of shape ``[num_prompts * group_size, C, h, w]``.

    Sample ``i`` belongs to prompt ``i // group_size``. By default every sample gets independent noise; with
    ``shared_per_group=True`` the ``group_size`` samples of a prompt start from the same ``x_T`` (the paper's
    reference code; the group then differs only through the per-step DDIM noise).
    """
    if num_prompts < 1 or group_size < 1:
        raise UserError(f"num_prompts ({num_prompts}) and group_size ({group_size}) must be >= 1",
                        "pass positive sizes")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if shared_per_group:
        noise = randn_tensor((num_prompts, *shape), generator=generator, device=device, dtype=dtype)
        return noise.repeat_interleave(group_size, dim=0)
    return randn_tensor((num_prompts * group_size, *shape), generator=generator, device=device, dtype=dtype)


@dataclass
class Rollout:
    """The record of one batch of DDIM rollouts.

    Attributes:
        trajectory: ``[B, T + 1, C, h, w]`` in the sampling dtype, on the model's device:
            ``x_{t_0}`` (the initial noise), then the sample after each of the ``T`` steps. ``latents`` and
            ``next_latents`` are views into it, so the chain is stored once, not twice.
        log_probs: ``[B, T]`` float32, ``log pi(x_{k+1} | x_k, c)`` per step (mean over ``C*h*w``).
        timesteps: ``[T]`` long on the CPU, ``t_k`` of step ``k`` (decreasing).
        images: ``[B, 3, H, W]`` float32 in [0, 1], decoded from ``final_latents``.
        eta, guidance_scale: the sampling settings, to be reused by :func:`transition_log_prob`.
    """

    trajectory: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    images: torch.Tensor
    eta: float
    guidance_scale: float

    @property
    def latents(self) -> torch.Tensor:
        """``x_{t_k}`` before each step, ``[B, T, C, h, w]`` (a view)."""
        return self.trajectory[:, :-1]

    @property
    def next_latents(self) -> torch.Tensor:
        """``x_{t_{k+1}}`` after each step, ``[B, T, C, h, w]`` (a view)."""
        return self.trajectory[:, 1:]

    @property
    def final_latents(self) -> torch.Tensor:
        """The denoised latents ``[B, C, h, w]`` that ``images`` were decoded from."""
        return self.trajectory[:, -1]

    @property
    def batch_size(self) -> int:
        return self.trajectory.shape[0]

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[1]

    def to(self, device: torch.device | str) -> Rollout:
        """Move the per-sample tensors (``timesteps`` stay on the CPU)."""
        return replace(self, trajectory=self.trajectory.to(device), log_probs=self.log_probs.to(device),
                       images=self.images.to(device))

    def select(self, index: torch.Tensor | slice) -> Rollout:
        """The sub-rollout of the samples ``index`` (a slice, long indices or a bool mask over ``B``)."""
        return replace(self, trajectory=self.trajectory[index], log_probs=self.log_probs[index],
                       images=self.images[index])

    @staticmethod
    def cat(rollouts: Sequence[Rollout]) -> Rollout:
        """Concatenate rollouts of the same schedule and settings along the batch."""
        first = rollouts[0]
        for r in rollouts[1:]:
            if not torch.equal(r.timesteps, first.timesteps) or (r.eta, r.guidance_scale) != (
                    first.eta, first.guidance_scale):
                raise UserError("cannot concatenate rollouts sampled with different schedules or settings",
                                "sample them with the same num_steps, eta and guidance_scale")
        return replace(first, trajectory=torch.cat([r.trajectory for r in rollouts]),
                       log_probs=torch.cat([r.log_probs for r in rollouts]),
                       images=torch.cat([r.images for r in rollouts]))


def _check_embeds(batch: int, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor | None) -> None:
    if cond_embeds.ndim != 3 or cond_embeds.shape[0] != batch:
        raise UserError(f"cond_embeds must be [B={batch}, L, D], got {tuple(cond_embeds.shape)}",
                        "encode one prompt per sample (repeat each prompt group_size times)")
    if uncond_embeds is not None and (uncond_embeds.ndim != 3 or uncond_embeds.shape[0] not in (1, batch)
                                      or uncond_embeds.shape[1:] != cond_embeds.shape[1:]):
        raise UserError(f"uncond_embeds must be [1 or {batch}, {cond_embeds.shape[1]}, {cond_embeds.shape[2]}], "
                        f"got {tuple(uncond_embeds.shape)}", "encode the negative prompt with the same tokenizer "
                        "and text encoder")


@torch.no_grad()
def sample_rollout(
    bundle: ModelBundle,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None = None,
    *,
    num_steps: int,
    guidance_scale: float,
    eta: float,
    initial_latents: torch.Tensor,
    generator: Generators = None,
    batch_size: int | None = None,
    progress: bool = False,
    stochastic_steps: int | None = None,
) -> Rollout:
    """Sample ``B`` images with stochastic DDIM + CFG and record every transition and its log-probability.

    Per step ``k`` (``t = t_k``)::

        eps     = eps_u + w (eps_c - eps_u)                      (one batched UNet call, guidance.py)
        x_{k+1} = mean(x_k, eps, t) + eta * sigma_t * z_k        (ddim.py, eq. 12/16 of DDIM)
        log_probs[:, k] = mean_{C,h,w} log N(x_{k+1}; mean, (eta sigma_t)^2 I)

    With the same ``initial_latents`` and noise this reproduces ``StableDiffusionPipeline(...,
    latents=initial_latents, eta=eta, generator=generator, output_type="pt")``.

    Args:
        bundle: the model; its ``unet`` is run in eval mode (its previous mode is restored), its scheduler's
            config is copied (:func:`make_sampling_scheduler`), never mutated.
        cond_embeds: ``[B, L, D]`` prompt states, one row per sample. Their dtype is the sampling dtype (as in
            diffusers' pipeline): latents are cast to it and the trajectory is stored in it.
        uncond_embeds: ``[B, L, D]``, ``[1, L, D]`` (shared) or ``None`` (no CFG).
        num_steps: ``T``, the number of DDIM steps.
        guidance_scale: ``w``; ``<= 1`` disables CFG.
        eta: DDIM noise scale, ``> 0``.
        initial_latents: ``x_T`` ``[B, C, h, w]`` (:func:`make_initial_latents`).
        generator: RNG for the per-step noise ``z_k``: ``None`` (global RNG), one ``torch.Generator`` (draws
            ``[chunk, C, h, w]`` per step, so results depend on ``batch_size``), or a list of ``B`` generators,
            one per sample, which makes sample ``i`` independent of batch composition and chunking.
        batch_size: process the ``B`` samples in chunks of at most this many (memory); ``None``: all at once.
        progress: show a tqdm bar over the denoising steps.
        stochastic_steps: ``S``: only the first ``S`` steps are stochastic; steps ``k >= S`` are deterministic
            DDIM (``eta = 0``, diffusers' ``DDIMScheduler.step``) and their ``log_probs`` are 0 (no density: they
            must never be trained). Training only the first steps and running the rest as an ODE removes the
            reward variance the untrained steps would add (MixGRPO, arXiv:2507.21802; Flow-GRPO-Fast).
            ``None``: all ``T`` steps are stochastic.

    Returns:
        A :class:`Rollout` with tensors on the model's device (``timesteps`` on the CPU).
    """
    check_eta(eta)
    unet = bundle.unet
    batch = initial_latents.shape[0]
    _check_embeds(batch, cond_embeds, uncond_embeds)
    if isinstance(generator, Sequence) and len(generator) != batch:
        raise UserError(f"got {len(generator)} generators for {batch} samples", "pass one generator per sample "
                        "or a single generator")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}", "pass a positive chunk size or None")

    scheduler = make_sampling_scheduler(bundle.scheduler, num_steps)
    timesteps = scheduler.timesteps.cpu()
    steps = timesteps.tolist()
    if stochastic_steps is not None and not 1 <= stochastic_steps <= num_steps:
        raise UserError(f"stochastic_steps must be in [1, {num_steps}], got {stochastic_steps}",
                        "pass None (all steps stochastic) or a count of leading stochastic steps")
    n_stochastic = num_steps if stochastic_steps is None else stochastic_steps
    check_nonzero_noise(ddim_coefficients(scheduler, timesteps[:n_stochastic], eta).std, timesteps[:n_stochastic])

    device, dtype = bundle.device, cond_embeds.dtype
    latents = initial_latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    cond_embeds = cond_embeds.to(device)
    if uncond_embeds is not None:
        uncond_embeds = uncond_embeds.to(device=device, dtype=dtype)
    chunk = batch if batch_size is None else min(batch_size, batch)

    trajectories, log_probs, images = [], [], []
    was_training = unet.training
    unet.eval()
    try:
        with tqdm(total=num_steps * -(-batch // chunk), disable=not progress, desc="rollout") as bar:
            for start in range(0, batch, chunk):
                sl = slice(start, start + chunk)
                x = latents[sl]
                cond = cond_embeds[sl]
                uncond = None
                if uncond_embeds is not None:
                    uncond = uncond_embeds if uncond_embeds.shape[0] == 1 else uncond_embeds[sl]
                gen = list(generator[sl]) if isinstance(generator, Sequence) else generator
                chain, chunk_log_probs = [x], []
                for k, t in enumerate(steps):
                    noise_pred = guided_noise_pred(unet, x, t, cond, uncond, guidance_scale)
                    if k < n_stochastic:
                        x, log_prob = ddim_step_with_logprob(scheduler, noise_pred, t, x, eta, generator=gen)
                    else:
                        x = scheduler.step(noise_pred, t, x, eta=0.0).prev_sample.to(x.dtype)
                        log_prob = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
                    chain.append(x)
                    chunk_log_probs.append(log_prob)
                    bar.update()
                trajectories.append(torch.stack(chain, dim=1))
                log_probs.append(torch.stack(chunk_log_probs, dim=1))
                images.append(bundle.decode(x))
    finally:
        unet.train(was_training)

    def join(parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    return Rollout(trajectory=join(trajectories), log_probs=join(log_probs), timesteps=timesteps,
                   images=join(images), eta=float(eta), guidance_scale=float(guidance_scale))


def transition_log_prob(
    unet: torch.nn.Module,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    next_latents: torch.Tensor,
    timesteps: int | torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    guidance_scale: float,
    eta: float,
) -> torch.Tensor:
    """``log pi_theta(x_{t-1} = next_latents | x_t = latents, c)`` ``[B]``, differentiable w.r.t. the UNet.

    Same computation as one rollout step (guided UNet call + :func:`ddim_step_with_logprob` with
    ``prev_sample=next_latents``), so with the rollout's weights it reproduces ``Rollout.log_probs`` up to
    float rounding and the PPO ratio starts at 1.

    Args:
        unet: the policy UNet (train or eval mode as the caller set it; no grad context is imposed).
        scheduler: a ``DDIMScheduler`` with ``set_timesteps(num_steps)`` applied for the rollout's
            ``num_steps`` (:func:`make_sampling_scheduler`); it is only read.
        latents, next_latents: ``x_t`` and ``x_{t-1}`` ``[B, C, h, w]`` (e.g. ``rollout.latents[:, k]``).
        timesteps: ``t`` per sample, a long tensor ``[B]`` (samples may be at different steps) or an int.
            CPU timesteps (as stored in a :class:`Rollout`) avoid a host sync.
        cond_embeds, uncond_embeds, guidance_scale: as in :func:`sample_rollout`.
        eta: the rollout's ``eta`` (``> 0``).
    """
    return guided_transition(unet, scheduler, latents, timesteps, cond_embeds, uncond_embeds, guidance_scale,
                             eta).log_prob(next_latents)


def guided_transition(unet: torch.nn.Module, scheduler: DDIMScheduler, latents: torch.Tensor,
                      timesteps: int | torch.Tensor, cond_embeds: torch.Tensor, uncond_embeds: torch.Tensor | None,
                      guidance_scale: float, eta: float) -> DDIMTransition:
    """The policy's Gaussian ``N(mean [B, C, h, w], std^2)`` for ``x_{t-1}`` given ``x_t = latents``: one guided
    UNet call and the DDIM step math (arguments as in :func:`transition_log_prob`); ``mean`` is differentiable
    w.r.t. the UNet.
    """
    check_eta(eta)
    _check_embeds(latents.shape[0], cond_embeds, uncond_embeds)
    unet_t = timesteps.to(latents.device, non_blocking=True) if isinstance(timesteps, torch.Tensor) else timesteps
    noise_pred = guided_noise_pred(unet, latents, unet_t, cond_embeds, uncond_embeds, guidance_scale)
    return ddim_transition(scheduler, noise_pred, timesteps, latents, eta)

"""One stochastic DDIM step (eta > 0) with the log-probability of the transition.

For a rollout, every DDIM step with ``eta > 0`` is a Gaussian policy ``pi(x_{t-1} | x_t, c)``. With
``a_t = alphas_cumprod[t]``, ``a_prev = alphas_cumprod[t_prev]`` (``final_alpha_cumprod`` when ``t_prev < 0``)
and ``t_prev = t - num_train_timesteps // num_inference_steps`` (diffusers' rule, whatever the
``timestep_spacing``), eq. 12 of Song et al. (DDIM, arXiv:2010.02502) reads::

    x0_hat  = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)                     # "predicted x_0"
    sigma_t = sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)      # eq. 16
    std     = eta * sigma_t
    mean    = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - std^2) * eps       # "direction pointing to x_t"
    x_{t-1} = mean + std * z,   z ~ N(0, I)

``eps`` and ``x0_hat`` come from the model output according to ``prediction_type`` (``epsilon``,
``v_prediction``: ``x0_hat = sqrt(a_t) x_t - sqrt(1 - a_t) v``, ``eps = sqrt(a_t) v + sqrt(1 - a_t) x_t``;
``sample``: the output is ``x0_hat``), and ``x0_hat`` is clipped or dynamically thresholded exactly as
:meth:`diffusers.DDIMScheduler.step` does. For the same noise ``z`` the sample equals
``scheduler.step(noise_pred, t, x_t, eta=eta, variance_noise=z).prev_sample``.

The log-probability is the Gaussian log-density **averaged over all non-batch dimensions**::

    log_prob = mean_{c,h,w} [ -(x_{t-1} - mean)^2 / (2 std^2) - log(std) - log(sqrt(2 pi)) ]

This is the DDPO / Flow-GRPO convention. The sum over ``C*h*w`` dimensions (16384 for SD at 512 px) would
make the log-ratio of the PPO objective, ``log pi_new - log pi_old``, thousands of times larger than a
per-dimension change, so ``exp`` of it would overflow or saturate the clip range after one tiny update; the
per-dimension mean keeps ratios near 1 and makes the clip range comparable across resolutions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from safediffusion.errors import UserError

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _as_timesteps(timestep: int | torch.Tensor) -> torch.Tensor:
    """``int`` / 0-dim / ``[B]`` timesteps -> a 1-D long tensor (``[1]`` or ``[B]``) on its own device."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.long()
        if t.ndim == 0:
            return t.reshape(1)
        if t.ndim != 1:
            raise UserError(f"timestep must be an int or a 1-D tensor [B], got shape {tuple(t.shape)}",
                            "pass one timestep per sample")
        return t
    return torch.tensor([int(timestep)], dtype=torch.long)


def check_eta(eta: float) -> None:
    """Raise :class:`UserError` unless ``eta > 0``: a deterministic DDIM step has no log-density."""
    if not eta > 0:
        raise UserError(f"eta must be > 0 for RL rollouts: eta={eta} makes the DDIM step deterministic, so "
                        "it has no log-probability", "set sampling.eta > 0 (the paper uses 1.0)")


def check_nonzero_noise(std: torch.Tensor, timesteps: torch.Tensor) -> None:
    """Raise :class:`UserError` if a step's ``std`` (CPU tensor, from :func:`ddim_coefficients`) is zero."""
    bad = std <= 0
    if bool(bad.any()):
        raise UserError(f"DDIM steps at timesteps {timesteps.expand_as(std)[bad].tolist()} have zero noise, so they "
                        "have no log-probability (set_alpha_to_one=True makes the last step deterministic)",
                        "use a scheduler with set_alpha_to_one=False, as Stable Diffusion does")


class DDIMCoefficients(NamedTuple):
    """Per-step DDIM coefficients, float32 tensors of shape ``[1]`` or ``[B]`` (notation of the module doc)."""

    sqrt_alpha_t: torch.Tensor  # sqrt(a_t)
    sqrt_beta_t: torch.Tensor  # sqrt(1 - a_t)
    sqrt_alpha_prev: torch.Tensor  # sqrt(a_prev)
    direction: torch.Tensor  # sqrt(1 - a_prev - std^2), the weight of eps in the mean
    std: torch.Tensor  # eta * sigma_t


def ddim_coefficients(scheduler: DDIMScheduler, timestep: int | torch.Tensor, eta: float) -> DDIMCoefficients:
    """The coefficients of the step at ``timestep`` (on the timesteps' device; ints give CPU tensors).

    Computed in float32 with the same operations as ``DDIMScheduler.step``, so the step is bit-identical to
    diffusers' in float32. Requires ``scheduler.set_timesteps`` to have been called.
    """
    if scheduler.num_inference_steps is None:
        raise UserError("the DDIM scheduler has no inference schedule", "call scheduler.set_timesteps(num_steps) "
                        "first (or use safediffusion.sampling.make_sampling_scheduler)")
    step_ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas_cumprod = scheduler.alphas_cumprod
    if not isinstance(timestep, torch.Tensor) or timestep.ndim == 0:
        # one timestep: diffusers' own scalar indexing (cheap 0-dim ops), as [1] tensors on the CPU
        t = int(timestep)
        alpha_prod_t = alphas_cumprod[t].float().reshape(1)
        prev = alphas_cumprod[t - step_ratio] if t - step_ratio >= 0 else scheduler.final_alpha_cumprod
        alpha_prod_t_prev = torch.as_tensor(prev, dtype=torch.float32).reshape(1)
    else:
        t = _as_timesteps(timestep)
        alphas_cumprod = alphas_cumprod.to(device=t.device, dtype=torch.float32)
        final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=t.device)
        prev_t = t - step_ratio
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = torch.where(prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)], final)
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)  # sigma_t^2, eq. 16
    std = eta * variance ** (0.5)
    return DDIMCoefficients(
        sqrt_alpha_t=alpha_prod_t ** (0.5),
        sqrt_beta_t=beta_prod_t ** (0.5),
        sqrt_alpha_prev=alpha_prod_t_prev ** (0.5),
        direction=(1 - alpha_prod_t_prev - std**2) ** (0.5),
        std=std,
    )


class DDIMTransition(NamedTuple):
    """The Gaussian ``N(mean, std^2 I)`` of one DDIM step (notation of the module doc).

    ``mean`` is ``[B, C, h, w]`` float32; ``std`` and ``log_std`` are Python floats (one timestep for the
    batch) or float32 tensors ``[B]`` on the sample's device (one timestep per sample).
    """

    mean: torch.Tensor
    std: float | torch.Tensor
    log_std: float | torch.Tensor

    def std_like(self, x: torch.Tensor) -> float | torch.Tensor:
        """``std`` broadcastable against ``x [B, ...]``."""
        if isinstance(self.std, torch.Tensor):
            return self.std.view(-1, *([1] * (x.ndim - 1)))
        return self.std

    def log_prob(self, prev_sample: torch.Tensor) -> torch.Tensor:
        """``log N(x_{t-1}; mean, std^2 I)`` averaged over the non-batch dimensions, ``[B]`` float32::

            mean_d[-(x_d - mean_d)^2 / (2 std^2)] - log std - log sqrt(2 pi)
        """
        sq_err = (prev_sample.detach().float() - self.mean).square().flatten(1).mean(dim=1)
        return -sq_err / (2 * self.std**2) - self.log_std - _LOG_SQRT_2PI


def ddim_transition(scheduler: DDIMScheduler, noise_pred: torch.Tensor, timestep: int | torch.Tensor,
                    sample: torch.Tensor, eta: float) -> DDIMTransition:
    """The distribution of ``x_{t-1}`` given ``x_t = sample`` (arguments as in :func:`ddim_step_with_logprob`).

    ``mean`` is differentiable w.r.t. ``noise_pred`` (and ``sample``); the arithmetic runs in float32.
    """
    check_eta(eta)
    coefs = ddim_coefficients(scheduler, timestep, eta)
    device = sample.device
    if not (isinstance(timestep, torch.Tensor) and timestep.ndim == 1):
        # one timestep for the batch: Python scalars (exact float32 values), no host-device copies
        coefs = DDIMCoefficients(*(c.item() for c in coefs))
        if not coefs.std > 0:
            check_nonzero_noise(torch.tensor([coefs.std]), _as_timesteps(timestep))
        std, log_std = coefs.std, math.log(coefs.std)
    else:
        if coefs.std.device.type == "cpu":  # a check on accelerator timesteps would force a host sync
            check_nonzero_noise(coefs.std, _as_timesteps(timestep))
        std = coefs.std.to(device, non_blocking=True)  # [B]
        log_std = torch.log(coefs.std).to(device, non_blocking=True)
        view = (-1,) + (1,) * (sample.ndim - 1)
        coefs = DDIMCoefficients(*(c.to(device, non_blocking=True).view(view) for c in coefs))
    x_t = sample.float()
    model_output = noise_pred.float()

    # predicted x_0 and eps, eq. 12 ("predicted x_0")
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        pred_original_sample = (x_t - coefs.sqrt_beta_t * model_output) / coefs.sqrt_alpha_t
        pred_epsilon = model_output
    elif prediction_type == "sample":
        pred_original_sample = model_output
        pred_epsilon = (x_t - coefs.sqrt_alpha_t * pred_original_sample) / coefs.sqrt_beta_t
    elif prediction_type == "v_prediction":
        pred_original_sample = coefs.sqrt_alpha_t * x_t - coefs.sqrt_beta_t * model_output
        pred_epsilon = coefs.sqrt_alpha_t * model_output + coefs.sqrt_beta_t * x_t
    else:
        raise UserError(f"unsupported prediction_type '{prediction_type}'",
                        "use a scheduler with prediction_type epsilon, v_prediction or sample")

    if scheduler.config.thresholding:
        pred_original_sample = scheduler._threshold_sample(pred_original_sample)
    elif scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        pred_original_sample = pred_original_sample.clamp(-r, r)

    # mean of x_{t-1}: sqrt(a_prev) x0_hat + sqrt(1 - a_prev - std^2) eps
    mean = coefs.sqrt_alpha_prev * pred_original_sample + coefs.direction * pred_epsilon
    return DDIMTransition(mean, std, log_std)


def ddim_step_with_logprob(
    scheduler: DDIMScheduler,
    noise_pred: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    variance_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step ``x_t -> x_{t-1}`` and ``log pi(x_{t-1} | x_t)`` (formulas in the module docstring).

    Args:
        scheduler: a ``DDIMScheduler`` on which ``set_timesteps(num_steps)`` was called (only its
            ``num_inference_steps``, ``alphas_cumprod``, ``final_alpha_cumprod`` and config are read).
        noise_pred: model output ``[B, C, h, w]`` (after classifier-free guidance).
        timestep: ``t`` as an int or 0-dim tensor (all samples) or a long tensor ``[B]`` (one per sample).
            CPU timesteps are checked for a zero-variance step; an int costs no host-device transfer, a CPU
            ``[B]`` tensor one non-blocking copy, an accelerator tensor none (and no check, to avoid a sync).
        sample: ``x_t`` ``[B, C, h, w]``.
        eta: DDIM's stochasticity, ``> 0`` (``eta = 1`` is DDPM-like).
        prev_sample: ``x_{t-1}`` to score (training: the stored rollout sample; treated as data, no gradient).
            ``None`` samples it as ``mean + std * z``.
        generator: RNG for ``z``: one ``torch.Generator`` or a list with one per sample (drawn as
            :func:`diffusers.utils.torch_utils.randn_tensor` does, i.e. like the SD pipeline). A CPU generator
            with an accelerator sample costs a copy per step, as in diffusers.
        variance_noise: ``z`` itself ``[B, C, h, w]`` (exclusive with ``generator``).

    Returns:
        ``(prev_sample [B, C, h, w] in sample.dtype, log_prob [B] float32)``. The arithmetic runs in float32;
        the log-prob is that of the returned (dtype-cast) ``prev_sample`` and is differentiable w.r.t.
        ``noise_pred`` (and ``sample``).

    Raises:
        UserError: ``eta <= 0`` (a deterministic step has no density), a zero-variance step, or both
            ``generator`` and ``variance_noise`` given.
    """
    if generator is not None and variance_noise is not None:
        raise UserError("both generator and variance_noise were given", "pass only one of them")
    transition = ddim_transition(scheduler, noise_pred, timestep, sample, eta)
    if prev_sample is None:
        if variance_noise is None:
            variance_noise = randn_tensor(noise_pred.shape, generator=generator, device=sample.device,
                                          dtype=noise_pred.dtype)
        prev_sample = (transition.mean + transition.std_like(sample) * variance_noise.float()).to(sample.dtype)
    elif prev_sample.shape != sample.shape:
        raise UserError(f"prev_sample shape {tuple(prev_sample.shape)} differs from sample shape "
                        f"{tuple(sample.shape)}", "pass x_{t-1} with the same shape as x_t")
    return prev_sample, transition.log_prob(prev_sample)

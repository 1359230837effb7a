"""Stochastic DDIM rollouts with classifier-free guidance and per-step log-probabilities."""

from safediffusion.sampling.ddim import DDIMCoefficients, check_eta, ddim_coefficients, ddim_step_with_logprob
from safediffusion.sampling.guidance import guided_noise_pred
from safediffusion.sampling.rollout import (
    Rollout,
    make_initial_latents,
    make_sampling_scheduler,
    sample_rollout,
    transition_log_prob,
)

__all__ = [
    "DDIMCoefficients",
    "Rollout",
    "check_eta",
    "ddim_coefficients",
    "ddim_step_with_logprob",
    "guided_noise_pred",
    "make_initial_latents",
    "make_sampling_scheduler",
    "sample_rollout",
    "transition_log_prob",
]

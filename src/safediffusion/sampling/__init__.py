"""Stochastic DDIM rollouts with classifier-free guidance and per-step log-probabilities."""

from safediffusion.sampling.ddim import (
    DDIMCoefficients,
    DDIMTransition,
    check_eta,
    ddim_coefficients,
    ddim_step_with_logprob,
    ddim_transition,
)
from safediffusion.sampling.guidance import guided_noise_pred
from safediffusion.sampling.rollout import (
    Rollout,
    guided_transition,
    make_initial_latents,
    make_sampling_scheduler,
    sample_rollout,
    transition_log_prob,
)

__all__ = [
    "DDIMCoefficients",
    "DDIMTransition",
    "Rollout",
    "check_eta",
    "ddim_coefficients",
    "ddim_step_with_logprob",
    "ddim_transition",
    "guided_noise_pred",
    "guided_transition",
    "make_initial_latents",
    "make_sampling_scheduler",
    "sample_rollout",
    "transition_log_prob",
]

"""ddim_step_with_logprob against diffusers' DDIMScheduler.step and an independent Gaussian density."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler
from torch.distributions import Normal

from safediffusion.errors import UserError
from safediffusion.models.tiny import build_tiny_scheduler
from safediffusion.sampling import ddim_step_with_logprob, make_sampling_scheduler

SHAPE = (3, 4, 8, 8)


def _scheduler(num_steps: int = 10, **overrides) -> DDIMScheduler:
    base = build_tiny_scheduler()
    return make_sampling_scheduler(DDIMScheduler.from_config(base.config, **overrides), num_steps)


def _tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g))


@pytest.mark.parametrize("overrides", [
    {},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample"},
    {"clip_sample": True, "clip_sample_range": 0.5},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    {"timestep_spacing": "trailing", "steps_offset": 0},
    {"timestep_spacing": "linspace"},
    {"set_alpha_to_one": True, "steps_offset": 0},
])
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_sample_matches_diffusers_step(overrides: dict, eta: float) -> None:
    sched = _scheduler(**overrides)
    noise_pred, sample, z = _tensors()
    for t in sched.timesteps[:-1].tolist():  # the last step may be deterministic (set_alpha_to_one)
        ours, log_prob = ddim_step_with_logprob(sched, noise_pred, t, sample, eta, variance_noise=z)
        ref = sched.step(noise_pred, t, sample, eta=eta, variance_noise=z).prev_sample
        assert torch.equal(ours, ref)  # bit-identical in float32
        assert log_prob.shape == (SHAPE[0],) and torch.isfinite(log_prob).all()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_log_prob_is_the_per_dimension_mean_gaussian_density(prediction_type: str) -> None:
    sched = _scheduler(prediction_type=prediction_type)
    noise_pred, sample, _ = _tensors(1)
    prev = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    eta = 0.8
    for t in sched.timesteps.tolist():
        prev_t = t - sched.config.num_train_timesteps // sched.num_inference_steps
        # independent reference: the mean is diffusers' step without noise, the std eta * sqrt(_get_variance)
        mean = sched.step(noise_pred, t, sample, eta=eta, variance_noise=torch.zeros(SHAPE)).prev_sample
        std = eta * sched._get_variance(t, prev_t) ** 0.5
        expected = Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
        returned, log_prob = ddim_step_with_logprob(sched, noise_pred, t, sample, eta, prev_sample=prev)
        assert returned is prev
        torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-5)


def test_log_prob_of_sampled_step_and_generator_draw() -> None:
    sched = _scheduler()
    noise_pred, sample, _ = _tensors(2)
    t = int(sched.timesteps[3])
    gens = [torch.Generator().manual_seed(i) for i in range(SHAPE[0])]
    prev, log_prob = ddim_step_with_logprob(sched, noise_pred, t, sample, 1.0, generator=gens)
    # per-sample generators draw one [1, C, h, w] tensor each, like diffusers' randn_tensor
    z = torch.cat([torch.randn((1, *SHAPE[1:]), generator=torch.Generator().manual_seed(i)) for i in range(SHAPE[0])])
    torch.testing.assert_close(prev, sched.step(noise_pred, t, sample, eta=1.0, variance_noise=z).prev_sample)
    _, rescored = ddim_step_with_logprob(sched, noise_pred, t, sample, 1.0, prev_sample=prev)
    torch.testing.assert_close(log_prob, rescored)
    # a sampled transition has log-density close to that of the standard normal per dim, shifted by -log(std)
    assert not torch.equal(log_prob, torch.zeros_like(log_prob))


def test_per_sample_timesteps_equal_scalar_timesteps() -> None:
    sched = _scheduler()
    noise_pred, sample, z = _tensors(3)
    ts = torch.tensor([int(sched.timesteps[0]), int(sched.timesteps[4]), int(sched.timesteps[-1])])
    prev, log_prob = ddim_step_with_logprob(sched, noise_pred, ts, sample, 1.0, variance_noise=z)
    for i, t in enumerate(ts.tolist()):
        p_i, lp_i = ddim_step_with_logprob(sched, noise_pred[i:i + 1], t, sample[i:i + 1], 1.0,
                                           variance_noise=z[i:i + 1])
        torch.testing.assert_close(prev[i:i + 1], p_i, rtol=0, atol=1e-6)
        torch.testing.assert_close(log_prob[i:i + 1], lp_i, rtol=0, atol=1e-6)


def test_log_prob_is_differentiable_in_noise_pred() -> None:
    sched = _scheduler()
    noise_pred, sample, _ = _tensors(4)
    noise_pred.requires_grad_(True)
    prev = torch.randn(SHAPE)
    _, log_prob = ddim_step_with_logprob(sched, noise_pred, int(sched.timesteps[2]), sample, 1.0, prev_sample=prev)
    log_prob.sum().backward()
    assert noise_pred.grad is not None and noise_pred.grad.abs().sum() > 0


def test_half_precision_sample_keeps_dtype() -> None:
    sched = _scheduler()
    noise_pred, sample, z = _tensors(5)
    prev, log_prob = ddim_step_with_logprob(sched, noise_pred.bfloat16(), 501, sample.bfloat16(), 1.0,
                                            variance_noise=z.bfloat16())
    assert prev.dtype == torch.bfloat16 and log_prob.dtype == torch.float32
    ref = sched.step(noise_pred, 501, sample, eta=1.0, variance_noise=z.bfloat16().float()).prev_sample
    torch.testing.assert_close(prev.float(), ref, rtol=0, atol=0.05)


@pytest.mark.parametrize("eta", [0.0, -0.5])
def test_deterministic_eta_is_refused(eta: float) -> None:
    sched = _scheduler()
    noise_pred, sample, _ = _tensors()
    with pytest.raises(UserError, match=r"^eta must be > 0 for RL rollouts: "):
        ddim_step_with_logprob(sched, noise_pred, 501, sample, eta)


def test_zero_noise_step_and_missing_schedule_are_refused() -> None:
    sched = _scheduler(set_alpha_to_one=True, steps_offset=0)
    noise_pred, sample, _ = _tensors()
    with pytest.raises(UserError, match="zero noise"):
        ddim_step_with_logprob(sched, noise_pred, int(sched.timesteps[-1]), sample, 1.0)
    with pytest.raises(UserError, match="set_timesteps"):
        ddim_step_with_logprob(build_tiny_scheduler(), noise_pred, 501, sample, 1.0)
    with pytest.raises(UserError, match="only one"):
        ddim_step_with_logprob(_scheduler(), noise_pred, 501, sample, 1.0, generator=torch.Generator(),
                               variance_noise=torch.zeros(SHAPE))


def test_zero_terminal_snr_first_step_is_finite() -> None:
    """a_t = 0 at t = 999 (Lin et al. 2024): at eta 1 the first step's eps weight sqrt(1 - a_prev - std^2)
    is exactly 0 and x0_hat comes from v alone; every step stays finite and equals diffusers'."""
    sched = _scheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                       steps_offset=0)
    assert sched.timesteps[0] == 999 and sched.alphas_cumprod[999] == 0
    noise_pred, sample, z = _tensors(2)
    for t in sched.timesteps.tolist():
        ours, log_prob = ddim_step_with_logprob(sched, noise_pred, t, sample, 1.0, variance_noise=z)
        assert torch.isfinite(ours).all() and torch.isfinite(log_prob).all()
        ref = sched.step(noise_pred, t, sample, eta=1.0, variance_noise=z).prev_sample
        torch.testing.assert_close(ours, ref)

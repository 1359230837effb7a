"""sample_rollout / transition_log_prob on tiny random SD models, checked against diffusers' own pipeline."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline

from safediffusion.errors import UserError
from safediffusion.models.tiny import build_tiny_bundle
from safediffusion.sampling import (
    Rollout,
    ddim_step_with_logprob,
    make_initial_latents,
    make_sampling_scheduler,
    sample_rollout,
    transition_log_prob,
)

STEPS = 6
PROMPTS = ["a red square", "a blue circle"]
GROUP = 2


@pytest.fixture(scope="module", params=[False, True], ids=["latent", "pixel"])
def setup(request):
    bundle = build_tiny_bundle(seed=0, pixel_space=request.param)
    cond = bundle.encode_prompts([p for p in PROMPTS for _ in range(GROUP)])
    uncond = bundle.encode_prompts([""])
    x_T = make_initial_latents(len(PROMPTS), GROUP, bundle.latent_shape(), torch.Generator().manual_seed(0))
    return bundle, cond, uncond, x_T


@pytest.fixture(scope="module")
def latent_setup():
    bundle = build_tiny_bundle(seed=0)
    cond = bundle.encode_prompts([p for p in PROMPTS for _ in range(GROUP)])
    uncond = bundle.encode_prompts([""])
    x_T = make_initial_latents(len(PROMPTS), GROUP, bundle.latent_shape(), torch.Generator().manual_seed(0))
    return bundle, cond, uncond, x_T


def _rollout(bundle, cond, uncond, x_T, *, seed=1, w=5.0, eta=1.0, **kwargs) -> Rollout:
    return sample_rollout(bundle, cond, uncond, num_steps=STEPS, guidance_scale=w, eta=eta, initial_latents=x_T,
                          generator=kwargs.pop("generator", torch.Generator().manual_seed(seed)), **kwargs)


def _pipeline(bundle) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(bundle.vae, bundle.text_encoder, bundle.tokenizer, bundle.unet,
                                   copy.deepcopy(bundle.scheduler), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("w", [5.0, 1.0])
@pytest.mark.parametrize("per_sample_generators", [False, True])
def test_matches_stable_diffusion_pipeline(latent_setup, w: float, per_sample_generators: bool) -> None:
    bundle, cond, uncond, x_T = latent_setup
    batch = cond.shape[0]

    def gen():
        if per_sample_generators:
            return [torch.Generator().manual_seed(100 + i) for i in range(batch)]
        return torch.Generator().manual_seed(1)

    rollout = _rollout(bundle, cond, uncond.expand(batch, -1, -1), x_T, w=w, generator=gen())
    pipe = _pipeline(bundle)
    kwargs = dict(prompt_embeds=cond, negative_prompt_embeds=uncond.expand(batch, -1, -1), latents=x_T,
                  num_inference_steps=STEPS, guidance_scale=w, eta=1.0)
    latents = pipe(**kwargs, generator=gen(), output_type="latent").images
    images = pipe(**kwargs, generator=gen(), output_type="pt").images
    torch.testing.assert_close(rollout.final_latents, latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rollout.images, images, rtol=1e-5, atol=1e-5)
    # the per-step noise matters: another seed gives other latents
    other = _rollout(bundle, cond, uncond, x_T, w=w, seed=2)
    assert (other.final_latents - rollout.final_latents).abs().max() > 1e-2


def test_pixel_space_matches_scheduler_loop() -> None:
    bundle = build_tiny_bundle(seed=0, pixel_space=True)
    cond = bundle.encode_prompts(PROMPTS)
    uncond = bundle.encode_prompts([""])
    x = torch.randn(2, *bundle.latent_shape(), generator=torch.Generator().manual_seed(0))
    rollout = _rollout(bundle, cond, uncond, x, w=3.0)
    sched = make_sampling_scheduler(bundle.scheduler, STEPS)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = bundle.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond.expand(2, -1, -1), cond])
                              ).sample
            eps_u, eps_c = eps.chunk(2)
            x = sched.step(eps_u + 3.0 * (eps_c - eps_u), t, x, eta=1.0, generator=g).prev_sample
    torch.testing.assert_close(rollout.final_latents, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rollout.images, (x / 2 + 0.5).clamp(0, 1))
    assert rollout.images.shape == (2, 3, 16, 16)


def test_rollout_record(setup) -> None:
    bundle, cond, uncond, x_T = setup
    bundle.unet.train()
    before = bundle.scheduler.num_inference_steps
    r = _rollout(bundle, cond, uncond, x_T)
    assert bundle.unet.training, "the caller's train/eval mode is restored"
    bundle.unet.eval()
    assert bundle.scheduler.num_inference_steps == before, "the bundle's scheduler is not mutated"
    B, C, h, w = x_T.shape
    assert r.latents.shape == r.next_latents.shape == (B, STEPS, C, h, w)
    assert r.log_probs.shape == (B, STEPS) and r.log_probs.dtype == torch.float32
    assert torch.isfinite(r.log_probs).all()
    assert r.timesteps.dtype == torch.long and r.timesteps.device.type == "cpu"
    assert r.timesteps.tolist() == make_sampling_scheduler(bundle.scheduler, STEPS).timesteps.tolist()
    assert torch.equal(r.latents[:, 0], x_T)
    assert torch.equal(r.latents[:, 1:], r.next_latents[:, :-1])
    assert torch.equal(r.final_latents, r.next_latents[:, -1])
    assert r.images.shape[:2] == (B, 3) and 0 <= r.images.min() and r.images.max() <= 1
    assert (r.batch_size, r.num_steps, r.eta, r.guidance_scale) == (B, STEPS, 1.0, 5.0)
    # each stored log-prob is the step's density of the stored next latent
    sched = make_sampling_scheduler(bundle.scheduler, STEPS)
    k = 2
    with torch.no_grad():
        x = r.latents[:, k]
        eps = bundle.unet(torch.cat([x, x]), r.timesteps[k], encoder_hidden_states=torch.cat(
            [uncond.expand(B, -1, -1), cond])).sample.chunk(2)
        _, lp = ddim_step_with_logprob(sched, eps[0] + 5.0 * (eps[1] - eps[0]), int(r.timesteps[k]), x, 1.0,
                                       prev_sample=r.next_latents[:, k])
    torch.testing.assert_close(lp, r.log_probs[:, k], rtol=1e-5, atol=1e-5)


def test_transition_log_prob_reproduces_rollout_and_has_gradients(setup) -> None:
    bundle, cond, uncond, x_T = setup
    r = _rollout(bundle, cond, uncond, x_T)
    B, T = r.log_probs.shape
    sched = make_sampling_scheduler(bundle.scheduler, STEPS)
    # one batch of transitions at steps shuffled per sample, as the trainer does (steps differ across rows)
    perm = torch.stack([torch.randperm(T, generator=torch.Generator().manual_seed(i))[:2] for i in range(B)])
    perm = perm[:, :1] if bundle.vae is None else perm  # pixel space is 4x the UNet cost: fewer rows
    assert len(set(perm[:, 0].tolist())) > 1
    rows = torch.arange(B)[:, None].expand_as(perm)
    flat = lambda x: x[rows, perm].reshape(-1, *x.shape[2:])  # noqa: E731
    lp = transition_log_prob(bundle.unet, sched, flat(r.latents), flat(r.next_latents),
                             r.timesteps[perm].reshape(-1), cond.repeat_interleave(perm.shape[1], 0), uncond, 5.0, 1.0)
    torch.testing.assert_close(lp, r.log_probs[rows, perm].reshape(-1), rtol=1e-5, atol=1e-5)
    # differentiable w.r.t. the UNet, and an update moves the log-probs (the PPO ratio leaves 1)
    bundle.unet.zero_grad()
    lp[:4].mean().backward()
    grads = [p.grad for p in bundle.unet.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    bundle.unet.zero_grad(set_to_none=True)


def test_shared_and_independent_initial_noise() -> None:
    shape = (4, 8, 8)
    shared = make_initial_latents(3, 4, shape, torch.Generator().manual_seed(0), shared_per_group=True)
    assert shared.shape == (12, *shape)
    for g in range(3):
        group = shared[g * 4:(g + 1) * 4]
        assert all(torch.equal(group[0], x) for x in group[1:])
    assert not torch.equal(shared[0], shared[4]) and not torch.equal(shared[4], shared[8])
    indep = make_initial_latents(3, 4, shape, torch.Generator().manual_seed(0))
    assert indep.shape == (12, *shape)
    assert torch.unique(indep.flatten(1), dim=0).shape[0] == 12
    assert torch.equal(indep, make_initial_latents(3, 4, shape, torch.Generator().manual_seed(0)))
    assert make_initial_latents(1, 2, shape, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_per_sample_generators_make_results_independent_of_chunking(latent_setup) -> None:
    bundle, cond, uncond, x_T = latent_setup
    gens = lambda idx: [torch.Generator().manual_seed(50 + i) for i in idx]  # noqa: E731
    full = _rollout(bundle, cond, uncond, x_T, generator=gens(range(4)))
    chunked = _rollout(bundle, cond, uncond, x_T, generator=gens(range(4)), batch_size=3)
    alone = _rollout(bundle, cond[2:3], uncond, x_T[2:3], generator=gens([2]))
    # equal up to float rounding of batched kernels (amplified over the steps by CFG 5) ...
    for other, idx in ((chunked, slice(None)), (alone, slice(2, 3))):
        torch.testing.assert_close(other.trajectory, full.trajectory[idx], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(other.log_probs, full.log_probs[idx], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(other.images, full.images[idx], rtol=1e-4, atol=1e-4)
    # ... while another sample's generator gives a clearly different chain
    swapped = _rollout(bundle, cond[2:3], uncond, x_T[2:3], generator=gens([3]))
    assert (swapped.final_latents - full.final_latents[2:3]).abs().max() > 1e-2


def test_select_and_cat(latent_setup) -> None:
    bundle, cond, uncond, x_T = latent_setup
    r = _rollout(bundle, cond, uncond, x_T)
    back = Rollout.cat([r.select(slice(0, 1)), r.select(torch.tensor([1, 2, 3]))])
    assert torch.equal(back.trajectory, r.trajectory) and torch.equal(back.log_probs, r.log_probs)
    with pytest.raises(UserError, match="different"):
        Rollout.cat([r, _rollout(bundle, cond, uncond, x_T, eta=0.5)])


def test_bad_inputs_are_refused(latent_setup) -> None:
    bundle, cond, uncond, x_T = latent_setup
    with pytest.raises(UserError, match=r"^eta must be > 0 for RL rollouts: "):
        _rollout(bundle, cond, uncond, x_T, eta=0.0)
    with pytest.raises(UserError, match=r"^eta must be > 0 for RL rollouts: "):
        transition_log_prob(bundle.unet, make_sampling_scheduler(bundle.scheduler, STEPS), x_T, x_T, 1, cond,
                            uncond, 5.0, 0.0)
    with pytest.raises(UserError, match="cond_embeds"):
        _rollout(bundle, cond[:3], uncond, x_T)
    with pytest.raises(UserError, match="uncond_embeds"):
        _rollout(bundle, cond, uncond.expand(2, -1, -1), x_T)
    with pytest.raises(UserError, match="generators"):
        _rollout(bundle, cond, uncond, x_T, generator=[torch.Generator()])
    with pytest.raises(UserError, match="num_steps"):
        sample_rollout(bundle, cond, uncond, num_steps=0, guidance_scale=5.0, eta=1.0, initial_latents=x_T)


def test_deterministic_steps_after_the_stochastic_ones(latent_setup) -> None:
    """stochastic_steps=S: steps < S equal the all-stochastic rollout's (same noise draws), steps >= S are
    diffusers' eta=0 DDIM step from the same state and carry log-prob 0."""
    bundle, cond, uncond, x_T = latent_setup
    S = 2
    full = _rollout(bundle, cond, uncond, x_T, generator=[torch.Generator().manual_seed(i) for i in range(4)])
    mixed = _rollout(bundle, cond, uncond, x_T, generator=[torch.Generator().manual_seed(i) for i in range(4)],
                     stochastic_steps=S)
    torch.testing.assert_close(mixed.next_latents[:, :S], full.next_latents[:, :S])
    torch.testing.assert_close(mixed.log_probs[:, :S], full.log_probs[:, :S])
    assert torch.equal(mixed.log_probs[:, S:], torch.zeros(4, STEPS - S))
    assert not torch.allclose(mixed.final_latents, full.final_latents)
    sched = make_sampling_scheduler(bundle.scheduler, STEPS)
    x = mixed.next_latents[:, S - 1]
    with torch.no_grad():
        for t in sched.timesteps[S:]:
            eps_u, eps_c = bundle.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat(
                [uncond.expand(4, -1, -1), cond])).sample.chunk(2)
            x = sched.step(eps_u + 5.0 * (eps_c - eps_u), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(mixed.final_latents, x, rtol=1e-5, atol=1e-5)
    # a second run is bit-identical: the deterministic tail draws no noise
    again = _rollout(bundle, cond, uncond, x_T, generator=[torch.Generator().manual_seed(i) for i in range(4)],
                     stochastic_steps=S)
    assert torch.equal(again.final_latents, mixed.final_latents)
    for bad in (0, STEPS + 1):
        with pytest.raises(UserError, match="stochastic_steps"):
            _rollout(bundle, cond, uncond, x_T, stochastic_steps=bad)

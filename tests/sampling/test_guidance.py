"""guided_noise_pred: one batched UNet call equals the two-call CFG formula."""

from __future__ import annotations

import pytest
import torch

from safediffusion.models.tiny import build_tiny_bundle
from safediffusion.sampling import guided_noise_pred


@pytest.fixture(scope="module")
def parts():
    bundle = build_tiny_bundle(seed=0)
    cond = bundle.encode_prompts(["a red square", "a blue circle", "a cat"])
    uncond = bundle.encode_prompts([""])
    latents = torch.randn(3, *bundle.latent_shape(), generator=torch.Generator().manual_seed(0))
    return bundle.unet, latents, cond, uncond


def _eps(unet, x, t, embeds):
    return unet(x, t, encoder_hidden_states=embeds).sample


@torch.no_grad()
def test_cfg_matches_two_separate_calls(parts) -> None:
    unet, x, cond, uncond = parts
    w = 5.0
    eps_c = _eps(unet, x, 501, cond)
    eps_u = _eps(unet, x, 501, uncond.expand(3, -1, -1))
    expected = eps_u + w * (eps_c - eps_u)
    torch.testing.assert_close(guided_noise_pred(unet, x, 501, cond, uncond, w), expected, rtol=1e-5, atol=1e-5)
    # a [B, L, D] unconditional batch gives the same as the broadcast [1, L, D]
    torch.testing.assert_close(guided_noise_pred(unet, x, 501, cond, uncond.expand(3, -1, -1).clone(), w),
                               expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, eps_c)


@torch.no_grad()
def test_no_guidance_is_the_conditional_call(parts) -> None:
    unet, x, cond, uncond = parts
    eps_c = _eps(unet, x, 301, cond)
    torch.testing.assert_close(guided_noise_pred(unet, x, 301, cond, None, 5.0), eps_c)
    torch.testing.assert_close(guided_noise_pred(unet, x, 301, cond, uncond, 1.0), eps_c)


@torch.no_grad()
def test_per_sample_timesteps(parts) -> None:
    unet, x, cond, uncond = parts
    ts = torch.tensor([901, 501, 1])
    batched = guided_noise_pred(unet, x, ts, cond, uncond, 3.0)
    for i, t in enumerate(ts.tolist()):
        single = guided_noise_pred(unet, x[i:i + 1], t, cond[i:i + 1], uncond, 3.0)
        torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-5, atol=1e-5)

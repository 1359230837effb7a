"""Tensor CLIP preprocessing against transformers' own CLIPImageProcessor (the PIL path)."""

import warnings

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessor

from safediffusion.rewards.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop,
    clip_preprocess,
    resize_shortest_side,
)

# One uint8 step in normalised units: 1 / 255 / min(std) ~ 0.0146; PIL rounds after resizing.
UINT8_TOL = 1.5 / 255 / min(CLIP_STD)


def _smooth_images(shape, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=shape, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (20, 20), (100, 37), (32, 32)])
def test_matches_clip_image_processor(shape):
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    u8 = (_smooth_images(shape) * 255).round().to(torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = proc(images=u8[0].permute(1, 2, 0).numpy(), return_tensors="np")["pixel_values"]
    ours = clip_preprocess(u8.float() / 255, 32)
    assert ours.shape == (1, 3, 32, 32)
    assert torch.allclose(ours, torch.from_numpy(np.asarray(ref)), atol=UINT8_TOL)


def test_shortest_side_rule_and_crop():
    x = torch.rand(2, 3, 40, 100)
    assert resize_shortest_side(x, 20).shape[-2:] == (20, 50)
    assert resize_shortest_side(x.transpose(-1, -2), 20).shape[-2:] == (50, 20)
    assert resize_shortest_side(torch.rand(1, 3, 7, 7), 32).shape[-2:] == (32, 32)
    same = torch.rand(1, 3, 32, 32)
    assert resize_shortest_side(same, 32) is same
    crop = center_crop(torch.arange(36.0).view(1, 1, 6, 6), 2)
    assert crop.flatten().tolist() == [14.0, 15.0, 20.0, 21.0]
    with pytest.raises(ValueError):
        center_crop(torch.rand(1, 3, 4, 8), 5)


def test_batched_equals_per_image_and_differentiable():
    x = _smooth_images((24, 40), batch=3).requires_grad_(True)
    batched = clip_preprocess(x, 16)
    single = torch.cat([clip_preprocess(x[i:i + 1], 16) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)
    batched.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_dtype_and_shape_checks():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    assert clip_preprocess(x, 8).dtype == torch.float64
    assert clip_preprocess(x, 8, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        clip_preprocess(torch.rand(3, 16, 16), 8)

"""Steering / alignment / negative-only / weighted rewards vs direct computations on the raw CLIPModel."""

import json

import pytest
import torch
import torch.nn.functional as F

from safediffusion.config import PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS
from safediffusion.models.tiny import build_tiny_clip
from safediffusion.rewards.base import Reward, WeightedSumReward
from safediffusion.rewards.clip_rewards import ClipAlignmentReward, NegativeOnlyReward, SteeringReward
from safediffusion.rewards.encoders import HFClipEncoder
from safediffusion.rewards.preprocess import CLIP_MEAN, CLIP_STD

PROMPTS = ["a cat on a sofa", "a cat on a sofa", "a nude person", "a nude person", "a red car", "a red car"]


@pytest.fixture(scope="module")
def clip():
    model, tokenizer = build_tiny_clip(seed=0)
    return model, tokenizer, HFClipEncoder.from_model(model, tokenizer, name="tiny")


@pytest.fixture(scope="module")
def images():
    return torch.rand(len(PROMPTS), 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _raw_text(model, tokenizer, texts):
    feats = [model.text_projection(model.text_model(input_ids=tokenizer(t, return_tensors="pt")["input_ids"])
                                   .pooler_output)[0] for t in texts]
    return torch.stack(feats)  # unnormalised


def _raw_image(model, images):
    size = model.config.vision_config.image_size
    x = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return model.visual_projection(model.vision_model(pixel_values=x).pooler_output)  # unnormalised


class CountingEncoder:
    """Wraps an encoder and records every encode_text call."""

    def __init__(self, inner):
        self.inner = inner
        self.text_calls: list[list[str]] = []

    def encode_text(self, texts):
        self.text_calls.append(list(texts))
        return self.inner.encode_text(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@torch.no_grad()
def test_steering_matches_direct_computation(clip, images):
    model, tokenizer, enc = clip
    alpha = 0.5
    reward = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=alpha)
    r = reward(images, PROMPTS)
    # the paper's formula, written out on the raw transformers model
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    v = unit(unit(_raw_text(model, tokenizer, PAPER_SAFE_ANCHORS)).mean(0)
             - unit(_raw_text(model, tokenizer, PAPER_UNSAFE_ANCHORS)).mean(0))
    target = unit(unit(_raw_text(model, tokenizer, PROMPTS)) + alpha * v)
    expected = F.cosine_similarity(_raw_image(model, images), target, dim=-1)
    assert r.shape == (6,) and r.dtype == torch.float32
    assert torch.allclose(r, expected, atol=1e-5)
    assert torch.allclose(reward.artifacts()["v_safe"], v, atol=1e-6)


@torch.no_grad()
def test_alpha_zero_is_clip_alignment(clip, images):
    _, _, enc = clip
    steer0 = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=0.0)
    align = ClipAlignmentReward(enc)
    assert torch.allclose(steer0(images, PROMPTS), align(images, PROMPTS), atol=1e-6)
    expected = (enc.encode_images(images) * enc.encode_text(PROMPTS)).sum(-1)
    assert torch.allclose(align(images, PROMPTS), expected, atol=1e-6)
    steer = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=0.5)
    assert not torch.allclose(steer(images, PROMPTS), align(images, PROMPTS), atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["all", "unsafe_only", "projection"])
def test_batched_equals_per_image_loop(clip, images, mode):
    _, _, enc = clip
    reward = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=0.5, mode=mode)
    batched = reward(images, PROMPTS)
    fresh = SteeringReward(enc, reward.v_safe, 0.5, mode)
    loop = torch.cat([fresh(images[i:i + 1], PROMPTS[i:i + 1]) for i in range(len(PROMPTS))])
    assert torch.allclose(batched, loop, atol=1e-5)


@torch.no_grad()
def test_prompt_targets_cached_per_unique_prompt(clip, images):
    _, _, enc = clip
    counting = CountingEncoder(enc)
    v = torch.randn(32)
    reward = SteeringReward(counting, v, alpha=0.5, cache_size=3)
    first = reward(images, PROMPTS)
    # each new prompt is encoded once, on its own (batch-independent, bit-reproducible targets)
    assert counting.text_calls == [["a cat on a sofa"], ["a nude person"], ["a red car"]]
    again = reward(images, PROMPTS)
    assert len(counting.text_calls) == 3  # all cached
    assert torch.equal(first, again)
    reward(images[:2], ["a blue car", "a red car"])
    assert counting.text_calls[-1] == ["a blue car"]
    # LRU with 3 entries: "a cat on a sofa" was the least recently used and is evicted
    reward(images[:1], ["a cat on a sofa"])
    assert counting.text_calls[-1] == ["a cat on a sofa"]
    assert len(counting.text_calls) == 5
    reward.clear_cache()
    reward(images[:1], ["a red car"])
    assert counting.text_calls[-1] == ["a red car"]


@pytest.mark.parametrize("name", ["steering", "negative"])
def test_gradients_flow_to_images(clip, name):
    _, _, enc = clip
    with torch.inference_mode():  # built (and called once) without autograd, then used with it
        if name == "steering":
            reward = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS)
        else:
            reward = NegativeOnlyReward(enc, PAPER_UNSAFE_ANCHORS)
        reward(torch.rand(2, 3, 16, 16), ["a", "b"])
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    reward(x, ["a", "b"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@torch.no_grad()
def test_negative_only(clip, images):
    _, _, enc = clip
    reward = NegativeOnlyReward(enc, PAPER_UNSAFE_ANCHORS)
    r = reward(images, PROMPTS)
    cos = enc.encode_images(images) @ enc.encode_text(PAPER_UNSAFE_ANCHORS).T  # [B, M]
    assert torch.allclose(r, -cos.mean(1), atol=1e-6)
    assert torch.allclose(reward(images, ["anything"] * len(PROMPTS)), r)  # ignores the prompt
    assert reward.artifacts()["z_unsafe"].shape == (3, 32)
    assert reward.metadata()["unsafe_anchors"] == PAPER_UNSAFE_ANCHORS
    with pytest.raises(ValueError):
        NegativeOnlyReward(enc, [])


@torch.no_grad()
def test_weighted_sum(clip, images):
    _, _, enc = clip
    steer = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=0.5)
    neg = NegativeOnlyReward(enc, PAPER_UNSAFE_ANCHORS)
    align = ClipAlignmentReward(enc)
    total = WeightedSumReward([(steer, 1.0), (neg, 0.25), (align, -0.5), (ClipAlignmentReward(enc), 2.0)])
    expected = steer(images, PROMPTS) + 0.25 * neg(images, PROMPTS) + 1.5 * align(images, PROMPTS)
    assert torch.allclose(total(images, PROMPTS), expected, atol=1e-6)
    parts = total.score_components(images, PROMPTS)
    assert list(parts) == ["steering", "negative", "clip", "clip_1", "total"]
    assert torch.allclose(parts["total"], expected, atol=1e-6)
    assert set(total.artifacts()) == {"steering/v_safe", "negative/z_unsafe"}
    meta = total.metadata()
    assert [c["key"] for c in meta["components"]] == ["steering", "negative", "clip", "clip_1"]
    assert meta["components"][1]["weight"] == 0.25
    json.dumps(meta)
    with pytest.raises(ValueError):
        WeightedSumReward([])


def test_call_contract_and_metadata(clip):
    _, _, enc = clip
    reward = SteeringReward.from_anchors(enc, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=0.3,
                                         mode="unsafe_only")
    out = reward(torch.rand(2, 3, 16, 16, dtype=torch.float64), ["a", "b"])
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        reward(torch.rand(2, 3, 16, 16), ["a"])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        reward(torch.rand(2, 16, 16), ["a", "b"])
    with pytest.raises(TypeError):
        reward(torch.rand(1, 3, 16, 16), "a")
    meta = reward.metadata()
    assert meta == {"name": "steering", "encoder": "tiny", "embed_dim": 32, "alpha": 0.3,
                    "mode": "unsafe_only", "safe_anchors": PAPER_SAFE_ANCHORS,
                    "unsafe_anchors": PAPER_UNSAFE_ANCHORS}
    json.dumps(meta)
    assert isinstance(reward, Reward)
    with pytest.raises(ValueError, match="v_safe must have shape"):
        SteeringReward(enc, torch.ones(5))
    with pytest.raises(ValueError, match="unknown steering mode"):
        SteeringReward(enc, torch.ones(32), mode="up")

"""``reward.encoder_type=open_clip`` against the real open_clip package: a tiny ViT with random weights.

HPSv2.1 is open_clip ``ViT-H-14`` with the state dict of ``HPS_v2.1_compressed.pt``, which HPSv2's scorer
loads as ``model.load_state_dict(torch.load(path)["state_dict"])``. Here a model of the same family
(:data:`TINY_CONFIG`: ViT with 14-px patches at 224 px, a 2-layer text transformer with open_clip's BPE
tokenizer, registered with ``open_clip.add_model_config``) gets random weights, is saved in that layout and
loaded through :func:`load_encoder` (and through the named ``hpsv2.1`` path with a local
``open_clip_finetuned``). Its embeddings are compared with open_clip's own ``encode_text`` / ``encode_image`` on
open_clip's own tokenizer and preprocessing transform (``Resize(224, bicubic) -> CenterCrop -> ToTensor ->
Normalize``).

What "the same preprocessing" can mean, measured (``x`` in [0, 1], pixel values after normalisation):

- an image open_clip does not resample (short side = 224): ours equals the PIL path exactly;
- a resampled image: ours equals open_clip's transform applied to the float image to ~1e-7 (torchvision's
  antialiased bicubic is ``F.interpolate(antialias=True)``; PIL clips to [0, 1] and so do we, torchvision does not
  on floats, so the reference is clamped to PIL's range);
- a resampled PIL image: PIL rounds to uint8 after each of its two separable passes, so
  ``|ours - PIL| <= (0.5 * sum_k |w_k| + 0.5) / 255 / std`` (``w_k`` the bicubic taps, ``sum |w_k| <= 1.3``) on
  images whose intermediate pass does not clip; we allow 1.5 levels. Noise images, whose bicubic overshoot PIL
  clips between its passes, differ by up to ~20 levels: a property of PIL, not a target.

Runs where open_clip is installed (the dev / CI environment pins it); skipped elsewhere, except under ``CI``,
where a missing open_clip is a broken environment and fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from safediffusion.config import RewardConfig
from safediffusion.rewards.build import build_reward
from safediffusion.rewards.encoders import OpenClipEncoder
from safediffusion.rewards.loading import load_encoder
from safediffusion.rewards.named import HPS_V2_1_CHECKPOINT, NamedOpenClip, load_named_encoder

if importlib.util.find_spec("open_clip") is None:
    if os.environ.get("CI"):
        pytest.fail("open_clip is not installed in the CI environment (requirements-dev.txt pins open_clip_torch)",
                    pytrace=False)
    pytest.skip("open_clip is not installed (pip install 'safediffusion[open_clip]')", allow_module_level=True)

import open_clip  # noqa: E402

ARCH = "safediffusion-test-ViT-T-14"
#: ViT-H-14's layout (224 px, 14-px patches, 77-token context, open_clip's 49408-token BPE vocabulary) at toy
#: width and depth: 2.1M parameters, 1.6M of them the token embedding.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PROMPTS = ["a photo of a cat", "an astronaut riding a horse on the moon, oil painting", "",
           "a very long prompt " + "with many words " * 30]  # > 77 tokens: truncated by the tokenizer
ATOL = 1e-4


class Fixture:
    """The reference open_clip model (random weights), its transform and tokenizer, and the checkpoint."""

    def __init__(self, root: Path) -> None:
        config = root / f"{ARCH}.json"
        config.write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(config)
        torch.manual_seed(0)
        model, _, self.transform = open_clip.create_model_and_transforms(ARCH, pretrained=None)
        with torch.no_grad():  # move every weight off its init (LayerNorm 1/0, zero biases, ...)
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(ARCH)
        self.mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(3, 1, 1)
        self.std = torch.tensor(model.visual.preprocess_cfg["std"]).view(3, 1, 1)
        # HPSv2's checkpoint layout: the model's state dict under "state_dict" (plus plain metadata)
        self.checkpoint = root / "HPS_v2.1_compressed.pt"
        torch.save({"state_dict": model.state_dict(), "epoch": 1, "name": "tiny"}, self.checkpoint)

    @torch.no_grad()
    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(texts)).float(), dim=-1)

    def clamp_normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        """Clip normalised pixel values to the image range [0, 1] (what PIL's uint8 output does)."""
        return ((pixels * self.std + self.mean).clamp(0, 1) - self.mean) / self.std


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("open_clip"))


@pytest.fixture(scope="module")
def encoder(ref) -> OpenClipEncoder:
    cfg = RewardConfig(encoder_type="open_clip", open_clip_arch=ARCH, open_clip_finetuned=str(ref.checkpoint))
    enc = load_encoder(cfg)
    assert isinstance(enc, OpenClipEncoder)
    return enc


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` image in [26, 229]: bilinear upsampling of 16x-coarser noise (no clipping
    anywhere in a bicubic resampling of it)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=g)
    x = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    return (x * 0.8 + 0.1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()


def as_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[1, 3, H, W]`` in [0, 1] (torchvision's ``ToTensor``)."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]


def test_checkpoint_loads_weights_only_and_strictly(ref, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    cfg = RewardConfig(encoder_type="open_clip", open_clip_arch=ARCH, open_clip_finetuned=str(ref.checkpoint))
    enc = load_encoder(cfg)
    assert calls == [True]
    assert enc.name == f"open_clip:{ARCH}:HPS_v2.1_compressed.pt"
    assert (enc.image_size, enc.embed_dim) == (224, 16)
    loaded, expected = enc.model.state_dict(), ref.model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training


def test_text_embeddings_match_open_clip(ref, encoder):
    z = encoder.encode_text(PROMPTS)
    expected = ref.text_embeds(PROMPTS)
    assert z.shape == (len(PROMPTS), 16)
    assert (z - expected).abs().max().item() < ATOL
    # different prompts give different embeddings (the comparison is not between constants)
    assert (expected[0] - expected[1]).abs().max().item() > 0.1


@pytest.mark.parametrize("size", [(224, 224), (300, 224), (224, 300)])  # (W, H): short side 224
def test_pil_images_open_clip_does_not_resample(ref, encoder, size):
    image = smooth_image(size[1], size[0], seed=size[0] * size[1])
    pixels = ref.transform(Image.fromarray(image))[None]
    ours = encoder.preprocess(as_unit_tensor(image))
    assert ours.shape == pixels.shape == (1, 3, 224, 224)
    assert (ours - pixels).abs().max().item() < 1e-6
    z = encoder.encode_images(as_unit_tensor(image))
    assert (z - ref.image_embeds(pixels)).abs().max().item() < ATOL


@pytest.mark.parametrize("size", [(512, 512), (640, 480), (150, 100), (333, 257)])  # (W, H)
def test_resampled_images_match_open_clip_transform(ref, encoder, size):
    w, h = size
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(w + h))  # noise: bicubic overshoots
    pixels = torch.stack([ref.clamp_normalised(ref.transform(img)) for img in x])
    ours = encoder.preprocess(x)
    assert (ours - pixels).abs().max().item() < 1e-5
    z = encoder.encode_images(x)
    assert (z - ref.image_embeds(pixels)).abs().max().item() < ATOL


@pytest.mark.parametrize("size", [(512, 512), (640, 480), (150, 100)])  # (W, H)
def test_resampled_pil_images_within_uint8_rounding(ref, encoder, size):
    w, h = size
    image = smooth_image(h, w, seed=w * h)
    pixels = ref.transform(Image.fromarray(image))[None]
    ours = encoder.preprocess(as_unit_tensor(image))
    level = 1 / 255 / ref.std.min().item()  # one uint8 step, normalised
    diff = (ours - pixels).abs()
    assert diff.max().item() <= 1.5 * level
    assert diff.mean().item() <= 0.5 * level  # rounding, not an offset


def test_image_gradients_reach_the_pixels(encoder):
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    encoder.encode_images(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_steering_reward_with_open_clip(ref, tmp_path):
    """``r(x, p) = z_img(x) . normalize(z_p + alpha v_safe)``, ``v_safe = normalize(mean z_safe - mean z_unsafe)``,
    every embedding from open_clip's own model, tokenizer and transform."""
    cfg = RewardConfig(name="steering", encoder_type="open_clip", open_clip_arch=ARCH,
                       open_clip_finetuned=ref.checkpoint.name, alpha=0.5, mode="all",
                       safe_anchors=["a dressed person", "a peaceful scene"], unsafe_anchors=["nudity", "violence"])
    (tmp_path / ref.checkpoint.name).symlink_to(ref.checkpoint)  # relative to the config's folder
    reward = build_reward(cfg, base_dir=str(tmp_path))
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    prompts = PROMPTS[:3]
    v_safe = F.normalize(ref.text_embeds(cfg.safe_anchors).mean(0) - ref.text_embeds(cfg.unsafe_anchors).mean(0),
                         dim=0)
    targets = F.normalize(ref.text_embeds(prompts) + 0.5 * v_safe, dim=-1)
    pixels = (x - ref.mean) / ref.std
    expected = (ref.image_embeds(pixels) * targets).sum(-1)
    with torch.no_grad():
        assert (reward(x, prompts) - expected).abs().max().item() < ATOL


def test_named_hpsv2_1_with_a_local_checkpoint(ref, encoder):
    """``reward.encoder=hpsv2.1 reward.open_clip_finetuned=PATH``: the named path, no download."""
    spec = NamedOpenClip("hpsv2.1", ARCH, "laion2b_s32b_b79k", HPS_V2_1_CHECKPOINT)
    named = load_named_encoder(spec, None, str(ref.checkpoint))
    assert named.name == "hpsv2.1:HPS_v2.1_compressed.pt"
    assert torch.equal(named.encode_text(PROMPTS), encoder.encode_text(PROMPTS))

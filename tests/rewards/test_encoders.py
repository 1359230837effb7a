"""HFClipEncoder and load_encoder on tiny random transformers CLIPs (offline)."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from safediffusion.config import RewardConfig
from safediffusion.errors import UserError
from safediffusion.models.tiny import build_tiny_clip, save_tiny_clip
from safediffusion.rewards.encoders import HFClipEncoder, projected_features
from safediffusion.rewards.loading import load_encoder
from safediffusion.rewards.preprocess import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny_clip(seed=0)
    return model, tokenizer, HFClipEncoder.from_model(model, tokenizer, name="tiny")


def _manual_image_features(model, images, mean=CLIP_MEAN, std=CLIP_STD):
    """Square images -> bicubic antialiased resize, normalise, vision tower + projection."""
    size = model.config.vision_config.image_size
    x = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    z = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
    return z / z.norm(dim=-1, keepdim=True)


def _manual_text_features(model, tokenizer, texts):
    """One unpadded prompt at a time through the text tower + projection."""
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        out.append(model.text_projection(model.text_model(input_ids=ids).pooler_output)[0])
    z = torch.stack(out)
    return z / z.norm(dim=-1, keepdim=True)


def test_interface_and_frozen(tiny):
    model, _, enc = tiny
    assert enc.embed_dim == 32 and enc.image_size == 32
    assert enc.device == torch.device("cpu") and enc.dtype == torch.float32
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert "tiny" in repr(enc)


@torch.no_grad()
def test_text_matches_raw_model_and_is_batched(tiny):
    model, tokenizer, enc = tiny
    texts = ["a cat", "a much longer prompt about a dog in a park", "x"]
    z = enc.encode_text(texts)
    assert z.shape == (3, 32) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(z, _manual_text_features(model, tokenizer, texts), atol=1e-5)
    enc_small = HFClipEncoder.from_model(model, tokenizer)
    enc_small.text_batch_size = 2
    assert torch.allclose(enc_small.encode_text(texts), z, atol=1e-6)
    assert enc.encode_text([]).shape == (0, 32)
    with pytest.raises(TypeError):
        enc.encode_text("a cat")


@torch.no_grad()
def test_text_truncated_to_context_length(tiny):
    _, _, enc = tiny
    prefix = "a" * 100  # the byte-level tokenizer makes one token per character: > 77 tokens
    z = enc.encode_text([prefix + " cat", prefix + " dog", "short"])
    assert torch.allclose(z[0], z[1], atol=1e-6)
    assert not torch.allclose(z[0], z[2], atol=1e-3)


@torch.no_grad()
def test_images_match_raw_model_batched_and_any_size(tiny):
    model, _, enc = tiny
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 16, 16, generator=g)
    z = enc.encode_images(images)
    assert z.shape == (5, 32) and torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(z, _manual_image_features(model, images), atol=1e-5)
    loop = torch.cat([enc.encode_images(images[i:i + 1]) for i in range(5)])
    assert torch.allclose(z, loop, atol=1e-5)
    assert enc.encode_images(torch.rand(2, 3, 24, 40, generator=g)).shape == (2, 32)
    with pytest.raises(ValueError):
        enc.encode_images(torch.rand(2, 1, 16, 16))


def test_image_gradients_reach_pixels(tiny):
    _, _, enc = tiny
    images = torch.rand(2, 3, 20, 28, requires_grad=True)
    enc.encode_images(images)[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@torch.no_grad()
def test_transformers4_tensor_returns_are_handled(tiny, monkeypatch):
    model, tokenizer, enc = tiny
    images = torch.rand(3, 3, 16, 16)
    texts = ["a", "bb"]
    ref_img, ref_txt = enc.encode_images(images), enc.encode_text(texts)
    # transformers 4.x: get_*_features return the projected tensor itself
    monkeypatch.setattr(model, "get_image_features", lambda pixel_values, **kw: CLIPModel.get_image_features(
        model, pixel_values).pooler_output)
    monkeypatch.setattr(model, "get_text_features",
                        lambda input_ids, attention_mask=None, **kw: CLIPModel.get_text_features(
                            model, input_ids, attention_mask=attention_mask).pooler_output)
    assert isinstance(model.get_image_features(enc.preprocess(images)), torch.Tensor)
    assert torch.allclose(enc.encode_images(images), ref_img)
    assert torch.allclose(enc.encode_text(texts), ref_txt)


def test_projected_features_variants():
    t = torch.ones(2, 3)
    assert projected_features(t) is t
    assert projected_features((torch.zeros(2, 5, 3), t)) is t
    with pytest.raises(TypeError):
        projected_features({"x": 1})


@torch.no_grad()
def test_from_pretrained_on_saved_tiny_clip(tmp_path, tiny):
    model, _, enc = tiny
    d = save_tiny_clip(tmp_path / "clip", seed=0)
    loaded = HFClipEncoder.from_pretrained(str(d))
    assert loaded.name == str(d) and loaded.image_size == 32
    assert loaded.mean == pytest.approx(CLIP_MEAN) and loaded.std == pytest.approx(CLIP_STD)
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded.encode_images(images), enc.encode_images(images), atol=1e-6)
    assert torch.allclose(loaded.encode_text(["a cat"]), enc.encode_text(["a cat"]), atol=1e-6)
    # mean/std come from preprocessor_config.json when present, OpenAI CLIP's defaults otherwise
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg["image_mean"], cfg["image_std"] = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    custom = HFClipEncoder.from_pretrained(str(d))
    assert custom.mean == (0.5, 0.5, 0.5) and custom.std == (0.25, 0.25, 0.25)
    (d / "preprocessor_config.json").unlink()
    assert HFClipEncoder.from_pretrained(str(d)).mean == pytest.approx(CLIP_MEAN)
    as_double = HFClipEncoder.from_pretrained(str(d), dtype=torch.float64)
    assert as_double.dtype == torch.float64 and as_double.encode_images(images).dtype == torch.float32


def test_from_pretrained_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        HFClipEncoder.from_pretrained("no-such-org/no-such-clip")
    with pytest.raises(UserError, match="does not exist"):
        HFClipEncoder.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no config.json"):
        HFClipEncoder.from_pretrained(str(tmp_path))
    d = save_tiny_clip(tmp_path / "clip")
    (d / "tokenizer.json").unlink()  # transformers 5 writes the vocabulary there
    with pytest.raises(UserError, match="no vocabulary"):
        HFClipEncoder.from_pretrained(str(d))
    d2 = save_tiny_clip(tmp_path / "clip2")
    (d2 / "model.safetensors").unlink()
    with pytest.raises(UserError, match="reward encoder folder .* has no .safetensors weights"):
        HFClipEncoder.from_pretrained(str(d2))
    d3 = save_tiny_clip(tmp_path / "clip3")
    (d3 / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="could not load the reward encoder"):
        HFClipEncoder.from_pretrained(str(d3))


@torch.no_grad()
def test_load_encoder_variants(tmp_path, monkeypatch, tiny):
    _, _, ref = tiny
    images = torch.rand(2, 3, 16, 16)
    tiny_enc = load_encoder(RewardConfig(encoder="tiny"))
    assert tiny_enc.name == "tiny"
    assert torch.allclose(tiny_enc.encode_images(images), ref.encode_images(images), atol=1e-6)
    d = save_tiny_clip(tmp_path / "weights" / "clip")
    by_dir = load_encoder(RewardConfig(encoder=str(d)))
    assert torch.allclose(by_dir.encode_images(images), ref.encode_images(images), atol=1e-6)
    monkeypatch.chdir(tmp_path / "weights")  # a relative path resolves against base_dir, not the cwd
    (tmp_path / "run").mkdir()
    rel = load_encoder(RewardConfig(encoder="../weights/clip"), base_dir=str(tmp_path / "weights" / "x"))
    assert rel.embed_dim == 32
    monkeypatch.chdir(tmp_path / "run")
    rel = load_encoder(RewardConfig(encoder="clip"), base_dir=str(tmp_path / "weights"))
    assert rel.name == str(tmp_path / "weights" / "clip")
    import safediffusion.mini.assets as assets

    monkeypatch.setattr(assets, "mini_clip_dir", lambda: d)
    mini = load_encoder(RewardConfig(encoder="mini"))
    assert mini.name == "mini" and mini.embed_dim == 32
    missing = tmp_path / "absent"
    monkeypatch.setattr(assets, "mini_reward_clip_dir", lambda: d)
    monkeypatch.setattr(assets, "mini_clip_dir", lambda: missing)  # the reward encoder is not the generator's
    reward = load_encoder(RewardConfig(encoder="mini-reward"))
    assert reward.name == "mini-reward"
    assert torch.allclose(reward.encode_images(images), ref.encode_images(images), atol=1e-6)

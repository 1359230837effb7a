"""The shipped weights load through the regular code paths (skipped until they have been trained)."""

import pytest
import torch

from safediffusion.mini.assets import WEIGHTS_DIR

pipeline_missing = not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file()
clip_missing = not (WEIGHTS_DIR / "clip" / "config.json").is_file()
NOT_TRAINED = "shipped weights not trained yet: run `python scripts/dev/mini/pretrain.py`"


@pytest.mark.skipif(pipeline_missing, reason=NOT_TRAINED)
def test_bundle_loads_and_generates():
    from safediffusion.mini.evaluate import generate
    from safediffusion.models.bundle import load_bundle

    bundle = load_bundle("mini")
    assert bundle.vae is not None and bundle.image_size == 32 and bundle.latent_shape() == (4, 16, 16)
    assert all(p.dtype == torch.float32 for p in bundle.unet.parameters())
    ctx = bundle.encode_prompts(["a photo of a red circle"])
    assert ctx.shape == (1, 32, bundle.unet.config.cross_attention_dim)
    images = generate(bundle, ["a photo of a red circle"] * 2, [0, 0], num_steps=4, progress=False)
    assert images.shape == (2, 3, 32, 32) and torch.equal(images[0], images[1])


@pytest.mark.skipif(pipeline_missing, reason=NOT_TRAINED)
def test_diffusers_pipeline_loads():
    from diffusers import StableDiffusionPipeline

    from safediffusion.mini.assets import mini_model_dir

    pipe = StableDiffusionPipeline.from_pretrained(mini_model_dir(), safety_checker=None)
    out = pipe("a photo of a circle", num_inference_steps=3, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)


@pytest.mark.skipif(clip_missing, reason=NOT_TRAINED)
def test_clip_loads_with_world_tokenizer():
    import json

    from safediffusion.mini.clip import image_features, load_mini_clip, text_features
    from safediffusion.mini.tokenizer import build_mini_tokenizer

    model, tok = load_mini_clip()
    assert len(tok) == len(build_mini_tokenizer()) == model.config.text_config.vocab_size
    assert tok.tokenize("a bloody photo") == build_mini_tokenizer().tokenize("a bloody photo")
    pre = json.loads((WEIGHTS_DIR / "clip" / "preprocessor_config.json").read_text())
    assert pre["crop_size"]["height"] == 32
    f = image_features(model, torch.rand(2, 3, 32, 32))
    t = text_features(model, tok, ["a photo of a circle", "a gory bloody scene"])
    assert f.shape == t.shape == (2, model.config.projection_dim)
    assert torch.allclose(f.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_shipped_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file()) if WEIGHTS_DIR.exists() else 0
    assert total <= 30 * 2**20


reward_clip_missing = not (WEIGHTS_DIR / "reward_clip" / "config.json").is_file()


@pytest.mark.skipif(reward_clip_missing, reason=NOT_TRAINED)
def test_shipped_reward_clip_loads_as_the_reward_encoder_and_differs_from_the_generator_clip():
    from safediffusion.config import RewardConfig
    from safediffusion.mini.criteria import CRITERIA
    from safediffusion.rewards.loading import load_encoder

    reward = load_encoder(RewardConfig(encoder="mini-reward"))
    generator = load_encoder(RewardConfig(encoder="mini"))
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        a, b = reward.encode_images(images), generator.encode_images(images)
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert float(reward.model.logit_scale.exp()) >= next(c.low for c in CRITERIA if c.key == "logit_scale")

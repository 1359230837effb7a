"""Tiny random models built from configs, offline: the test stand-ins for SD v1.x and CLIP.

Same classes as the real thing (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``,
``CLIPModel``, ``CLIPTokenizer``), a few thousand parameters each, so every real-model code path runs here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

from safediffusion.models.bundle import ModelBundle


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def byte_level_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer over bytes (no merges): 514 tokens, needs no vocabulary file."""
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    return tok


def tiny_text_config(vocab_size: int, hidden: int = 32, max_len: int = 77, projection_dim: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=max_len, projection_dim=projection_dim,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )


def build_tiny_unet(cross_attention_dim: int = 32, in_channels: int = 4, sample_size: int = 8) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=8,
    )


def build_tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), layers_per_block=1, norm_num_groups=8,
        sample_size=16,
    )


def build_tiny_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


def build_tiny_bundle(seed: int = 0, pixel_space: bool = False) -> ModelBundle:
    """Random tiny SD: latent 8x8x4 + VAE (16 px images), or pixel space 16x16x3 without a VAE."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    text_encoder = CLIPTextModel(tiny_text_config(len(tokenizer)))
    if pixel_space:
        unet = build_tiny_unet(in_channels=3, sample_size=16)
        vae = None
    else:
        unet = build_tiny_unet()
        vae = build_tiny_vae()
    bundle = ModelBundle(unet=unet, scheduler=build_tiny_scheduler(), text_encoder=text_encoder,
                         tokenizer=tokenizer, vae=vae, source="tiny")
    for m in (unet, text_encoder, vae):
        if m is not None:
            m.eval()
    return bundle


def build_tiny_clip(seed: int = 0, projection_dim: int = 32, image_size: int = 32) -> tuple[CLIPModel, CLIPTokenizer]:
    """A random tiny transformers ``CLIPModel`` and its byte-level tokenizer."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    text = tiny_text_config(len(tokenizer), projection_dim=projection_dim).to_dict()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=8, projection_dim=projection_dim).to_dict()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = CLIPModel(config).eval()
    return model, tokenizer


def save_tiny_pipeline(directory: str | Path, seed: int = 0, pixel_space: bool = False) -> Path:
    """Write a random tiny SD pipeline folder (diffusers layout)."""
    bundle = build_tiny_bundle(seed=seed, pixel_space=pixel_space)
    bundle.save_pretrained(directory)
    return Path(directory)


def save_tiny_clip(directory: str | Path, seed: int = 0, projection_dim: int = 32) -> Path:
    """Write a random tiny CLIP folder (model + tokenizer + image-processor config) in transformers layout."""
    model, tokenizer = build_tiny_clip(seed=seed, projection_dim=projection_dim)
    d = Path(directory)
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    import json

    (d / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_resize": True, "do_center_crop": True, "do_normalize": True, "image_processor_type": "CLIPImageProcessor",
    }))
    return d

"""Architectures of the miniature world's models (fixed configs; weights come from pretraining).

* CLIP: transformers ``CLIPModel``; text tower 3 layers x 64 wide (4 heads, 32 tokens), vision ViT 3 layers
  x 64 wide with 4x4 patches on 32x32 images (64 patches), shared projection dim 64.
* VAE: diffusers ``AutoencoderKL`` (16, 32) channels, 1 downsampling, no mid-block attention:
  32x32x3 <-> 16x16x4 (``LATENT_FACTOR`` = 2). Objects are 6-10 px, i.e. 3-5 latent pixels, so a shape is
  drawn in latent space rather than packed into the channels of one or two latent pixels.
* UNet: diffusers ``UNet2DConditionModel`` on 16x16x4 latents, blocks (32, 64, 64) at 16x16, 8x8 and 4x4,
  one layer each; plain residual blocks at 16x16, cross-attention (dim 64 = the CLIP text width) at 8x8
  and 4x4.

Sizes were chosen so that all pretraining fits the 2-core budget (``docs/miniature_world.md``).
* Scheduler: ``DDIMScheduler`` with SD's scaled-linear betas, epsilon prediction, ``clip_sample=False``.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from safediffusion.mini.tokenizer import MODEL_MAX_LENGTH
from safediffusion.mini.world import IMAGE_SIZE

TEXT_WIDTH = 64
LATENT_FACTOR = 2
PROJECTION_DIM = 64
#: CLIP image normalisation (per channel): ``(x - mean) / std`` for x in [0, 1].
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


def clip_config(vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPConfig:
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=MODEL_MAX_LENGTH, projection_dim=PROJECTION_DIM,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=4, projection_dim=PROJECTION_DIM,
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=PROJECTION_DIM)


def build_clip(vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPModel:
    return CLIPModel(clip_config(vocab_size, bos_token_id, eos_token_id))


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE, mid_block_add_attention=False,
    )


#: UNet layouts tried against the shipped one (``docs/miniature_world.md``), as overrides of its config.
#: ``attn16``: cross-attention at 16x16 too; ``wide``: blocks (48, 96, 96); ``deep``: two layers per block;
#: ``wide4x4``: blocks (32, 64, 128).
UNET_VARIANTS: dict[str, dict] = {
    "shipped": {},
    "attn16": {"down_block_types": ("CrossAttnDownBlock2D",) * 3, "up_block_types": ("CrossAttnUpBlock2D",) * 3},
    "wide": {"block_out_channels": (48, 96, 96)},
    "deep": {"layers_per_block": 2},
    "wide4x4": {"block_out_channels": (32, 64, 128)},
}


def build_unet(pooled_text: bool = False, variant: str = "shipped") -> UNet2DConditionModel:
    """The shipped UNet, or one of :data:`UNET_VARIANTS`. ``pooled_text``: also add an attention-pooled
    summary of the text states to the time embedding (diffusers' ``addition_embed_type="text"``), so every
    residual block, the 16×16 ones included, sees the whole prompt; an experiment (see
    docs/miniature_world.md), not what is shipped."""
    if variant not in UNET_VARIANTS:
        raise ValueError(f"unknown UNet variant {variant!r}; choose from {sorted(UNET_VARIANTS)}")
    extra = {"addition_embed_type": "text", "addition_embed_type_num_heads": 4} if pooled_text else {}
    config = dict(
        sample_size=IMAGE_SIZE // LATENT_FACTOR, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, norm_num_groups=16, **extra,
    )
    return UNet2DConditionModel(**{**config, **UNET_VARIANTS[variant]})


def build_scheduler(prediction_type: str = "epsilon", zero_snr: bool = False) -> DDIMScheduler:
    """DDIM with SD's scaled-linear betas. ``zero_snr``: betas rescaled to a zero terminal SNR and
    ``trailing`` timestep spacing (Lin et al. 2024), which needs ``prediction_type="v_prediction"``."""
    if zero_snr and prediction_type != "v_prediction":
        raise ValueError("a zero terminal SNR needs prediction_type='v_prediction'")
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_snr, timestep_spacing="trailing" if zero_snr else "leading",
    )

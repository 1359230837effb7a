"""The miniature world's CLIP: loading, preprocessing and unit-norm features.

Images enter as float ``[B, 3, 32, 32]`` in [0, 1] and are normalised ``(x - IMAGE_MEAN) / IMAGE_STD``
(the values in the shipped ``preprocessor_config.json``). Features are the projected embeddings,
L2-normalised: ``f_img = P_v(ViT(x)) / ||.||``, ``f_txt = P_t(T(ids)) / ||.||``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPTokenizer

from safediffusion.mini.architectures import IMAGE_MEAN, IMAGE_STD
from safediffusion.mini.world import IMAGE_SIZE


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> normalised pixel values (resized to 32x32 if needed)."""
    if images.shape[-1] != IMAGE_SIZE or images.shape[-2] != IMAGE_SIZE:
        images = torch.nn.functional.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                                 antialias=True, align_corners=False)
    mean = torch.tensor(IMAGE_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def _pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_features(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    """Unit-norm image embeddings ``[B, D]`` of images in [0, 1]."""
    f = _pooled(model.get_image_features(pixel_values=preprocess(images)))
    return torch.nn.functional.normalize(f.float(), dim=-1)


def text_features(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Unit-norm text embeddings ``[B, D]``."""
    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(next(model.parameters()).device)
    f = _pooled(model.get_text_features(input_ids=ids))
    return torch.nn.functional.normalize(f.float(), dim=-1)


def write_preprocessor_config(directory: str | Path) -> None:
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "size": {"shortest_edge": IMAGE_SIZE},
        "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD), "do_resize": True,
        "do_center_crop": True, "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "image_processor_type": "CLIPImageProcessor",
    }, indent=2))


def load_mini_clip(directory: str | Path | None = None) -> tuple[CLIPModel, CLIPTokenizer]:
    """The shipped tiny CLIP (float32, eval mode) and its tokenizer."""
    from safediffusion.mini.assets import mini_clip_dir
    from safediffusion.models.bundle import load_tokenizer

    d = Path(directory) if directory is not None else mini_clip_dir()
    model = CLIPModel.from_pretrained(d, torch_dtype=torch.float32).eval()
    return model, load_tokenizer(d)

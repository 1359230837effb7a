"""CLIP models for evaluation (Q16, CLIP score, FID features), loaded through transformers.

``name`` is a local transformers CLIP folder or a hub id (default ``openai/clip-vit-large-patch14``, the
ViT-L/14 that Q16's ViT-L/14 prompts and GenEval use). Weights are read from safetensors only. Images are
preprocessed by the folder's CLIP image processor (resize shortest side, center crop, normalise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from safediffusion.errors import LOAD_ERRORS, UserError, first_line
from safediffusion.models.clip_folder import resolve_clip_dir

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (a vision tower loaded from a full CLIP lists the text weights)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load_image_processor(root: Path) -> Any:
    if not (root / "preprocessor_config.json").is_file():
        raise UserError(f"CLIP folder '{root}' has no preprocessor_config.json",
                        "pass a complete CLIP folder (model, tokenizer and image-processor config)")
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5 without torchvision
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as Processor
    return Processor.from_pretrained(root)


def _from_pretrained(model_cls: Any, root: Path) -> tuple[Any, dict[str, Any]]:
    """``model_cls.from_pretrained(root)`` from safetensors, with its loading info; one-line errors."""
    try:
        with _quiet_transformers():
            return model_cls.from_pretrained(root, use_safetensors=True, output_loading_info=True)
    except LOAD_ERRORS as e:
        raise UserError(f"could not load the CLIP model from '{root}': {first_line(e)}",
                        "the folder must hold a transformers CLIPModel saved as safetensors") from None


def _check_loaded(info: dict[str, Any], root: Path, prefix: str) -> None:
    missing = [k for k in info.get("missing_keys", []) if k.startswith(prefix)]
    if missing:
        raise UserError(f"CLIP folder '{root}' lacks weights such as '{missing[0]}'",
                        "pass a transformers CLIPModel folder (e.g. openai/clip-vit-large-patch14)")


class ClipImageEncoder:
    """CLIP image tower with projection: images -> embeddings ``[B, projection_dim]`` (not normalised)."""

    def __init__(self, name: str = DEFAULT_CLIP, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 32) -> None:
        from transformers import CLIPVisionModelWithProjection

        self.root = resolve_clip_dir(name)
        model, info = _from_pretrained(CLIPVisionModelWithProjection, self.root)
        _check_loaded(info, self.root, "vision_model")
        _check_loaded(info, self.root, "visual_projection")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = load_image_processor(self.root)
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size
        self.projection_dim = int(self.model.config.projection_dim)

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images[i:i + self.batch_size]]
            pixels = self.processor(images=[im.convert("RGB") for im in batch], return_tensors="pt").pixel_values
            emb = self.model(pixel_values=pixels.to(self.device, self.dtype)).image_embeds
            out.append(emb.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.projection_dim)

    def encode_files(self, paths: Sequence[Path]) -> torch.Tensor:
        out = []
        for i in range(0, len(paths), self.batch_size):
            images = []
            for p in paths[i:i + self.batch_size]:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            out.append(self.encode(images))
        return torch.cat(out) if out else torch.zeros(0, self.projection_dim)


class ClipTextEncoder:
    """CLIP text tower with projection: prompts -> embeddings ``[B, projection_dim]`` (not normalised)."""

    def __init__(self, name: str = DEFAULT_CLIP, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 64) -> None:
        from transformers import CLIPTextModelWithProjection

        from safediffusion.models.bundle import load_tokenizer

        self.root = resolve_clip_dir(name)
        model, info = _from_pretrained(CLIPTextModelWithProjection, self.root)
        _check_loaded(info, self.root, "text_model")
        _check_loaded(info, self.root, "text_projection")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = load_tokenizer(self.root)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(list(texts[i:i + self.batch_size]), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
            out.append(self.model(input_ids=ids.to(self.device)).text_embeds.float().cpu())
        return torch.cat(out)

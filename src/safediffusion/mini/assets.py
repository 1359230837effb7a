"""Where the miniature world's shipped weights live inside the package."""

from __future__ import annotations

from pathlib import Path

from safediffusion.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def mini_model_dir() -> Path:
    """The miniature world's text-to-image model (a diffusers Stable Diffusion folder)."""
    d = WEIGHTS_DIR / "pipeline"
    if not (d / "model_index.json").is_file():
        raise UserError(f"the miniature world's diffusion model is missing ({d})",
                        "train it with `python scripts/dev/mini/pretrain.py` or reinstall safediffusion")
    return d


def mini_clip_dir() -> Path:
    """The miniature world's CLIP (a transformers CLIPModel folder with its tokenizer)."""
    d = WEIGHTS_DIR / "clip"
    if not (d / "config.json").is_file():
        raise UserError(f"the miniature world's CLIP is missing ({d})",
                        "train it with `python scripts/dev/mini/pretrain.py` or reinstall safediffusion")
    return d


def mini_reward_clip_dir() -> Path:
    """The miniature world's reward CLIP (a separate transformers CLIPModel folder; see
    ``safediffusion.mini.pretrain.clip``)."""
    d = WEIGHTS_DIR / "reward_clip"
    if not (d / "config.json").is_file():
        raise UserError(f"the miniature world's reward CLIP is missing ({d})",
                        "train it with `python scripts/dev/mini/pretrain.py --stage reward_clip` or reinstall "
                        "safediffusion")
    return d

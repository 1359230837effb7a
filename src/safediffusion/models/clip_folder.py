"""Where a transformers CLIP lives: a local folder or a hub id, checked to hold a config and safetensors.

Shared by the reward encoders (:mod:`safediffusion.rewards.encoders`) and the evaluation CLIPs
(:mod:`safediffusion.eval.clip`), so both accept the same inputs and fail with the same one-line errors.
"""

from __future__ import annotations

from pathlib import Path

from safediffusion.errors import UserError

#: The files of a CLIP folder that are fetched for a hub id (config, weights, tokenizer vocabulary).
CLIP_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt"]


def resolve_clip_dir(name: str, revision: str | None = None, what: str = "CLIP model") -> Path:
    """The local folder of ``name`` (a directory, or a hub id from the HF cache or the hub).

    Raises a one-line :class:`UserError` naming ``what`` when the folder has no ``config.json`` or no
    ``.safetensors`` weights (only safetensors are ever loaded).
    """
    from safediffusion.models.bundle import resolve_model_dir

    root = resolve_model_dir(name, revision, what=what, allow_patterns=CLIP_FILE_PATTERNS)
    if not (root / "config.json").is_file():
        raise UserError(f"{what} folder '{root}' has no config.json",
                        "pass a transformers CLIPModel folder (config.json, model.safetensors, tokenizer files) "
                        "or hub id")
    if not any(root.glob("*.safetensors")):
        raise UserError(f"{what} folder '{root}' has no .safetensors weights",
                        "convert the weights to safetensors (only safetensors are loaded)")
    return root

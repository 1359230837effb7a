"""Load the reward encoder a config names: ``load_encoder(cfg.reward, device, base_dir=cfg.base_dir)``.

Names resolve in this order: the Hub-pinned HPS encoders (:mod:`safediffusion.rewards.named`), an open_clip
architecture (``encoder_type: open_clip``), a name in :data:`safediffusion.registry.ENCODERS`, else a
transformers CLIP folder or hub id.
"""

from __future__ import annotations

from pathlib import Path

import torch

from safediffusion.config import Config, RewardConfig
from safediffusion.registry import ENCODERS
from safediffusion.rewards.encoders import ClipEncoder, HFClipEncoder, OpenClipEncoder
from safediffusion.rewards.named import NAMED_ENCODERS, load_named_encoder


def _tiny_encoder(device: torch.device | str) -> ClipEncoder:
    from safediffusion.models.tiny import build_tiny_clip

    model, tokenizer = build_tiny_clip(seed=0)
    return HFClipEncoder.from_model(model, tokenizer, name="tiny").to(device)


ENCODERS.register("tiny", _tiny_encoder)


def load_encoder(cfg: RewardConfig, device: torch.device | str = "cpu",
                 base_dir: str | None = None) -> ClipEncoder:
    """The reward encoder named by ``cfg``.

    - ``encoder: hpsv2.1`` / ``hpsv2`` (any ``encoder_type``): the named open_clip encoder, its checkpoint
      downloaded from the Hub at a pinned revision and hash-checked, unless ``open_clip_finetuned`` gives a local
      file (:func:`~safediffusion.rewards.named.load_named_encoder`);
    - ``encoder_type: open_clip``: :meth:`OpenClipEncoder.from_pretrained` with ``open_clip_arch``,
      ``open_clip_pretrained`` and ``open_clip_finetuned`` (``encoder`` is not used);
    - a name in :data:`safediffusion.registry.ENCODERS`: ``tiny``, a random tiny CLIP
      (:func:`~safediffusion.models.tiny.build_tiny_clip`, seed 0); the miniature world's plugin adds
      ``mini-reward`` (its reward CLIP, a separate model as HPSv2 is in the paper) and ``mini`` (its generator's
      CLIP, whose text tower conditions the UNet);
    - otherwise a transformers CLIP folder or hub id.

    Relative paths are resolved against ``base_dir`` (the config file's folder) by
    :meth:`Config.resolve_path`'s rule.
    """
    def resolve(path: str) -> str:
        return Config(base_dir=base_dir).resolve_path(path)

    pretrained = cfg.open_clip_pretrained
    if pretrained is not None and Path(resolve(pretrained)).exists():
        pretrained = resolve(pretrained)
    finetuned = resolve(cfg.open_clip_finetuned) if cfg.open_clip_finetuned else None
    if cfg.encoder in NAMED_ENCODERS:
        return load_named_encoder(NAMED_ENCODERS[cfg.encoder], pretrained, finetuned, device=device)
    if cfg.encoder_type == "open_clip":
        return OpenClipEncoder.from_pretrained(cfg.open_clip_arch, pretrained, finetuned, device=device)
    if cfg.encoder in ENCODERS:
        return ENCODERS.get(cfg.encoder)(device)
    return HFClipEncoder.from_pretrained(resolve(cfg.encoder), device=device)

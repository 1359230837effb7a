"""Build the configured reward: ``build_reward(cfg.reward, device, base_dir=cfg.base_dir)``."""

from __future__ import annotations

import torch

from safediffusion.config import Config, RewardConfig
from safediffusion.rewards.base import Reward, WeightedSumReward
from safediffusion.rewards.clip_rewards import ClipAlignmentReward, NegativeOnlyReward, SteeringReward
from safediffusion.rewards.encoders import ClipEncoder, load_encoder
from safediffusion.rewards.steering import require_anchors, resolve_anchors, safe_direction


def configured_anchors(cfg: RewardConfig, base_dir: str | None = None) -> tuple[list[str], list[str]]:
    """``(safe, unsafe)`` anchor phrases: ``*_anchors_file`` when set (overrides the list), else the lists.

    Relative file paths resolve against ``base_dir`` by :meth:`Config.resolve_path`'s rule.
    """
    resolver = Config(base_dir=base_dir)
    safe_file = resolver.resolve_path(cfg.safe_anchors_file) if cfg.safe_anchors_file else None
    unsafe_file = resolver.resolve_path(cfg.unsafe_anchors_file) if cfg.unsafe_anchors_file else None
    return (resolve_anchors(cfg.safe_anchors, safe_file, "reward.safe_anchors_file"),
            resolve_anchors(cfg.unsafe_anchors, unsafe_file, "reward.unsafe_anchors_file"))


def build_reward(cfg: RewardConfig, device: torch.device | str = "cpu", base_dir: str | None = None,
                 encoder: ClipEncoder | None = None) -> Reward:
    """The reward named by ``cfg.name`` (``steering``, ``clip``, ``negative``, ``mini-detector`` or ``weighted``).

    One encoder (``encoder``, or :func:`load_encoder` of ``cfg``) is shared by all components of a weighted
    sum, and ``v_safe`` is computed once. ``mini-detector`` alone loads no encoder.
    """
    cfg.validate()
    if encoder is None and cfg.needs_encoder:
        encoder = load_encoder(cfg, device, base_dir)
    safe, unsafe = configured_anchors(cfg, base_dir)
    names = list(cfg.weights) if cfg.name == "weighted" else [cfg.name]
    v_safe = safe_direction(encoder, safe, unsafe) if "steering" in names else None

    def make(name: str) -> Reward:
        if name == "steering":
            return SteeringReward(encoder, v_safe, cfg.alpha, cfg.mode, safe, unsafe)
        if name == "clip":
            return ClipAlignmentReward(encoder)
        if name == "negative":
            return NegativeOnlyReward(encoder, require_anchors(unsafe, "unsafe"))
        if name == "mini-detector":
            from safediffusion.mini.oracle import DetectorReward

            return DetectorReward()
        raise ValueError(f"unknown reward '{name}'")

    if cfg.name == "weighted":
        return WeightedSumReward([(make(name), weight) for name, weight in cfg.weights.items()])
    return make(cfg.name)

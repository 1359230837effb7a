"""Build the configured reward: ``build_reward(cfg.reward, device, base_dir=cfg.base_dir)``."""

from __future__ import annotations

import torch

from safediffusion.config import Config, RewardConfig
from safediffusion.errors import UserError
from safediffusion.registry import REWARDS, RewardContext, RewardEntry
from safediffusion.rewards.base import Reward, WeightedSumReward
from safediffusion.rewards.clip_rewards import ClipAlignmentReward, NegativeOnlyReward, SteeringReward
from safediffusion.rewards.encoders import ClipEncoder
from safediffusion.rewards.loading import load_encoder
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


def _steering(ctx: RewardContext) -> Reward:
    return SteeringReward(ctx.encoder, ctx.v_safe, ctx.cfg.alpha, ctx.cfg.mode, ctx.safe_anchors, ctx.unsafe_anchors)


def _clip(ctx: RewardContext) -> Reward:
    return ClipAlignmentReward(ctx.encoder)


def _negative(ctx: RewardContext) -> Reward:
    return NegativeOnlyReward(ctx.encoder, require_anchors(ctx.unsafe_anchors, "unsafe"))


REWARDS.register("steering", RewardEntry(_steering))
REWARDS.register("clip", RewardEntry(_clip))
REWARDS.register("negative", RewardEntry(_negative))


def reward_entries(cfg: RewardConfig) -> dict[str, RewardEntry]:
    """``{name: registry entry}`` of every reward ``cfg`` sums; an unknown name is a :class:`UserError`."""
    entries = {}
    for name in cfg.component_names:
        if name not in REWARDS or name == "weighted":
            allowed = ", ".join(REWARDS.names() + ([] if cfg.name == "weighted" else ["weighted"]))
            key = "reward.weights" if cfg.name == "weighted" else "reward.name"
            raise UserError(f"invalid config value for '{key}': unknown reward '{name}'", f"choose one of: {allowed}")
        entries[name] = REWARDS.get(name)
    return entries


def needs_encoder(cfg: RewardConfig) -> bool:
    """Whether any (component) reward of ``cfg`` scores with the CLIP encoder (its registry entry says)."""
    return any(entry.needs_encoder for entry in reward_entries(cfg).values())


def build_reward(cfg: RewardConfig, device: torch.device | str = "cpu", base_dir: str | None = None,
                 encoder: ClipEncoder | None = None) -> Reward:
    """The reward named by ``cfg.name``: a name in :data:`safediffusion.registry.REWARDS` (the core's
    ``steering``, ``clip``, ``negative``; plugins add theirs, e.g. the miniature world's ``mini-detector``) or
    ``weighted`` (a sum of registered rewards, ``cfg.weights``).

    One encoder (``encoder``, or :func:`load_encoder` of ``cfg``) is shared by all components of a weighted
    sum, and ``v_safe`` is computed once. No encoder is loaded when no component needs one.
    """
    cfg.validate()
    entries = reward_entries(cfg)
    if encoder is None and any(entry.needs_encoder for entry in entries.values()):
        encoder = load_encoder(cfg, device, base_dir)
    safe, unsafe = configured_anchors(cfg, base_dir)
    v_safe = safe_direction(encoder, safe, unsafe) if "steering" in entries else None
    ctx = RewardContext(cfg=cfg, encoder=encoder, safe_anchors=safe, unsafe_anchors=unsafe, v_safe=v_safe)
    if cfg.name == "weighted":
        return WeightedSumReward([(entries[name].build(ctx), weight) for name, weight in cfg.weights.items()])
    return entries[cfg.name].build(ctx)

"""Rewards: frozen CLIP encoders, the safety direction v_safe, and cosine rewards over (images, prompts).

    reward = build_reward(cfg.reward, device, base_dir=cfg.base_dir)
    r = reward(images, prompts)   # images [B, 3, H, W] in [0, 1] -> [B] float32
"""

from safediffusion.rewards.base import Reward, WeightedSumReward
from safediffusion.rewards.build import build_reward, configured_anchors
from safediffusion.rewards.clip_rewards import (
    ClipAlignmentReward,
    NegativeOnlyReward,
    PromptTargetReward,
    SteeringReward,
)
from safediffusion.rewards.encoders import ClipEncoder, HFClipEncoder, OpenClipEncoder
from safediffusion.rewards.loading import load_encoder
from safediffusion.rewards.preprocess import clip_preprocess
from safediffusion.rewards.steering import (
    read_anchor_file,
    resolve_anchors,
    safe_direction,
    steered_text_targets,
)

__all__ = [
    "ClipAlignmentReward",
    "ClipEncoder",
    "HFClipEncoder",
    "NegativeOnlyReward",
    "OpenClipEncoder",
    "PromptTargetReward",
    "Reward",
    "SteeringReward",
    "WeightedSumReward",
    "build_reward",
    "clip_preprocess",
    "configured_anchors",
    "load_encoder",
    "read_anchor_file",
    "resolve_anchors",
    "safe_direction",
    "steered_text_targets",
]

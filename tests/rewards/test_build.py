"""build_reward / configured_anchors from RewardConfig."""

import pytest
import torch

from safediffusion.config import PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, RewardConfig, load_config
from safediffusion.errors import UserError
from safediffusion.models.tiny import build_tiny_clip
from safediffusion.rewards.base import WeightedSumReward
from safediffusion.rewards.build import build_reward, configured_anchors
from safediffusion.rewards.clip_rewards import ClipAlignmentReward, NegativeOnlyReward, SteeringReward
from safediffusion.rewards.encoders import HFClipEncoder
from safediffusion.rewards.steering import safe_direction


@pytest.fixture(scope="module")
def encoder():
    return HFClipEncoder.from_model(*build_tiny_clip(seed=0), name="tiny")


def test_each_reward_name(encoder):
    steering = build_reward(RewardConfig(name="steering", alpha=0.7, mode="projection"), encoder=encoder)
    assert isinstance(steering, SteeringReward) and steering.alpha == 0.7 and steering.mode == "projection"
    assert torch.allclose(steering.v_safe, safe_direction(encoder, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS))
    assert steering.metadata()["safe_anchors"] == PAPER_SAFE_ANCHORS
    assert isinstance(build_reward(RewardConfig(name="clip"), encoder=encoder), ClipAlignmentReward)
    negative = build_reward(RewardConfig(name="negative"), encoder=encoder)
    assert isinstance(negative, NegativeOnlyReward) and negative.unsafe_anchors == PAPER_UNSAFE_ANCHORS


@torch.no_grad()
def test_weighted_shares_one_encoder(monkeypatch):
    import safediffusion.rewards.build as build

    loads = []
    real = build.load_encoder
    monkeypatch.setattr(build, "load_encoder", lambda *a, **k: loads.append(1) or real(*a, **k))
    cfg = RewardConfig(name="weighted", encoder="tiny", weights={"steering": 1.0, "negative": 0.5})
    reward = build_reward(cfg)
    assert len(loads) == 1 and isinstance(reward, WeightedSumReward)
    (_, steer, w1), (_, neg, w2) = reward.components
    assert steer.encoder is neg.encoder and (w1, w2) == (1.0, 0.5)
    images = torch.rand(2, 3, 16, 16)
    prompts = ["a", "b"]
    assert torch.allclose(reward(images, prompts), steer(images, prompts) + 0.5 * neg(images, prompts))


def test_anchor_files_override_lists_and_resolve_against_base_dir(tmp_path, monkeypatch, encoder):
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "safe.txt").write_text("# mine\na calm landscape\na family picnic\n")
    (tmp_path / "anchors" / "unsafe.txt").write_text("gore\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the cwd must not matter once the config's folder is known
    cfg = RewardConfig(safe_anchors_file="anchors/safe.txt", unsafe_anchors_file="anchors/unsafe.txt")
    safe, unsafe = configured_anchors(cfg, base_dir=str(tmp_path))
    assert safe == ["a calm landscape", "a family picnic"] and unsafe == ["gore"]
    reward = build_reward(cfg, base_dir=str(tmp_path), encoder=encoder)
    assert torch.allclose(reward.v_safe, safe_direction(encoder, safe, unsafe))
    absolute = RewardConfig(unsafe_anchors_file=str(tmp_path / "anchors" / "unsafe.txt"))
    assert configured_anchors(absolute)[1] == ["gore"]
    with pytest.raises(UserError, match="reward.safe_anchors_file file 'anchors/safe.txt' does not exist"):
        configured_anchors(cfg)  # no base_dir: relative to the cwd, where it is missing


def test_config_errors(encoder, tmp_path):
    with pytest.raises(UserError, match="unsafe anchor list is empty"):
        build_reward(RewardConfig(unsafe_anchors=[]), encoder=encoder)
    with pytest.raises(UserError, match="unsafe anchor list is empty"):
        build_reward(RewardConfig(name="negative", unsafe_anchors=[]), encoder=encoder)
    with pytest.raises(UserError, match="reward.alpha"):
        build_reward(RewardConfig(alpha=-1.0), encoder=encoder)
    # from YAML: a config file's folder is the base for its relative anchor paths
    (tmp_path / "safe.txt").write_text("a safe picture\n")
    (tmp_path / "run.yaml").write_text(
        "reward:\n  encoder: tiny\n  safe_anchors_file: safe.txt\n  alpha: 0.2\n")
    cfg = load_config(tmp_path / "run.yaml")
    reward = build_reward(cfg.reward, base_dir=cfg.base_dir)
    assert reward.safe_anchors == ["a safe picture"] and reward.alpha == 0.2

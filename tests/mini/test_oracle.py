"""The detector at training time: the oracle reward and the rollout marker flags."""

import numpy as np
import pytest
import torch

from safediffusion.config import RewardConfig
from safediffusion.errors import UserError
from safediffusion.mini.oracle import DetectorReward, marker_flags
from safediffusion.mini.render import realize, render_batch, to_tensor
from safediffusion.mini.world import Composition, ObjectSpec
from safediffusion.rewards import build as build_module
from safediffusion.rewards.build import build_reward, needs_encoder, reward_entries


def _scenes(categories: list[tuple[str, ...]]) -> torch.Tensor:
    comp = Composition("single_object", (ObjectSpec("circle"),))
    scenes = [realize(comp, np.random.default_rng([3, i]), cats) for i, cats in enumerate(categories)]
    return to_tensor(render_batch(scenes))


def test_marker_flags_and_reward_follow_the_markers():
    images = _scenes([(), ("gore",), (), ("weapon",), ("skull",)])
    assert marker_flags(images).tolist() == [False, True, False, True, True]
    reward = DetectorReward()(images, ["a photo of a circle"] * 5)
    assert reward.dtype == torch.float32
    assert reward.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_detector_reward_ignores_the_prompt():
    images = _scenes([(), ("gore",)])
    reward = DetectorReward()
    assert torch.equal(reward(images, ["a photo of a circle", "a bloody photo of a square"]),
                       reward(images, ["a bloody photo of a square", "a photo of a circle"]))


def test_build_reward_loads_no_encoder_for_the_detector(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mini-detector must not load a CLIP")

    monkeypatch.setattr(build_module, "load_encoder", refuse)
    reward = build_reward(RewardConfig(name="mini-detector"))
    assert isinstance(reward, DetectorReward)
    assert reward.metadata()["name"] == "mini-detector"


def test_weighted_sum_may_include_the_detector():
    cfg = RewardConfig(name="weighted", encoder="mini", weights={"steering": 1.0, "mini-detector": 0.5})
    assert needs_encoder(cfg)
    reward = build_reward(cfg)
    images = _scenes([(), ("skull",)])
    terms = reward.score_components(images, ["a photo of a circle"] * 2)
    assert terms["mini-detector"].tolist() == [1.0, 0.0]
    assert torch.allclose(terms["total"], terms["steering"] + 0.5 * terms["mini-detector"])


def test_unknown_weighted_component_names_the_allowed_ones():
    with pytest.raises(UserError, match="unknown reward 'aesthetic'.*mini-detector"):
        reward_entries(RewardConfig(name="weighted", weights={"aesthetic": 1.0}))

"""The exact detector at training time: an oracle reward and the marker rate of each epoch's rollouts.

Neither exists for real models (there is no exact judge of a real image); in the miniature world they
separate what GRPO can do from what a reward lets it see:

* :class:`DetectorReward` (``reward.name: mini-detector``): ``r(x) = 1 - 1[the detector finds a marker in x]``.
  It ignores the prompt, so it rewards only marker removal, never alignment. An upper bound for the
  safety effect of any reward, not a method to ship.
* :func:`marker_flags` (``logging.rollout_metrics: [marker_rate]``): which rollouts carry a marker, so the trainer can log
  ``marker_rate``, ``marker_rate/benign`` and ``marker_rate/unsafe`` per epoch next to the reward.
"""

from __future__ import annotations

from typing import Any

import torch

from safediffusion.mini.detector import detect
from safediffusion.rewards.base import Reward


def marker_flags(images: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: whether the detector finds any unsafe marker in each image ``[B, 3, H, W]`` in [0, 1]."""
    cpu = images.detach().float().cpu()
    return torch.tensor([detect(image).unsafe for image in cpu], dtype=torch.bool)


class DetectorReward(Reward):
    """``r(x, p) = 1 - 1[marker in x]`` (0 or 1), judged by :func:`safediffusion.mini.detector.detect`."""

    name = "mini-detector"

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return 1.0 - marker_flags(images).float()

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "formula": "1 - 1[marker]", "judge": "safediffusion.mini.detector.detect",
                "note": "oracle of the miniature world; ignores the prompt"}

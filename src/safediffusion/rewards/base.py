"""The reward interface, and a weighted sum of rewards.

A reward maps a batch of decoded images and their prompts to one score per image:

    r = reward(images, prompts)      # images [B, 3, H, W] in [0, 1], len(prompts) == B  ->  r [B] float32

on the images' device. It runs under the caller's grad mode (the GRPO trainer calls it under
``torch.no_grad()``); when grad is on, gradients flow back to the pixels. ``artifacts()`` (tensors) and
``metadata()`` (JSON-able) describe the reward so that a run directory records exactly what was optimised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch


class Reward(ABC):
    """Base class: subclasses set :attr:`name` and implement :meth:`score`."""

    name: str = "reward"

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores ``[B]`` for validated inputs (any float dtype/device; :meth:`__call__` converts)."""

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"rewards take images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if isinstance(prompts, str):
            raise TypeError("rewards take a list of prompts, one per image, not a single string")
        prompts = list(prompts)
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        return self.score(images, prompts).to(device=images.device, dtype=torch.float32)

    def artifacts(self) -> dict[str, torch.Tensor]:
        """Tensors that define the reward (e.g. ``{"v_safe": [D]}``), as CPU copies, for the run dir."""
        return {}

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description (name, anchors, alpha, mode, encoder ...) for the run dir."""
        return {"name": self.name}


class WeightedSumReward(Reward):
    """``r(x, p) = sum_k w_k r_k(x, p)`` over components ``[(r_k, w_k), ...]``.

    Component names are made unique (``steering``, ``steering_1`` ...) and prefix their artifacts
    (``"steering/v_safe"``); :meth:`score_components` returns every term for logging.
    """

    name = "weighted"

    def __init__(self, components: Sequence[tuple[Reward, float]]) -> None:
        components = list(components)
        if not components:
            raise ValueError("WeightedSumReward needs at least one (reward, weight) pair")
        self.components: list[tuple[str, Reward, float]] = []
        seen: dict[str, int] = {}
        for reward, weight in components:
            count = seen.get(reward.name, 0)
            seen[reward.name] = count + 1
            key = reward.name if count == 0 else f"{reward.name}_{count}"
            self.components.append((key, reward, float(weight)))

    def score_components(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{component name: r_k [B]}`` (unweighted) plus ``{"total": sum_k w_k r_k}``."""
        terms = {key: reward(images, prompts) for key, reward, _ in self.components}
        terms["total"] = self._total(terms)
        return terms

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self._total({key: reward(images, prompts) for key, reward, _ in self.components})

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros_like(terms[self.components[0][0]])
        for key, _, weight in self.components:
            total = total + weight * terms[key]
        return total

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {f"{key}/{name}": value for key, reward, _ in self.components
                for name, value in reward.artifacts().items()}

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name,
                "components": [{"key": key, "weight": weight, **reward.metadata()}
                               for key, reward, weight in self.components]}

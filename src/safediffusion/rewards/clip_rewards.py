"""CLIP cosine rewards: steering (SafeDiffusion-R1), plain alignment, and the negative-only ablation.

All use a frozen :class:`~safediffusion.rewards.encoders.ClipEncoder` with unit-norm embeddings, so a
cosine is a dot product (plain cosine, no logit scale; typical values 0.05-0.30 with real CLIPs):

- :class:`SteeringReward`:      ``r(x, p) = cos(z_img(x), t_p)``, ``t_p`` the steered target of prompt ``p``
  (:func:`~safediffusion.rewards.steering.steered_text_targets`; ``t_p = normalize(z_p + alpha v_safe)``
  in the default mode ``all``);
- :class:`ClipAlignmentReward`: ``r(x, p) = cos(z_img(x), z_p)`` (steering with ``alpha = 0``, mode ``all``);
- :class:`NegativeOnlyReward`:  ``r(x, p) = -mean_j cos(z_img(x), z(unsafe_j))``, independent of ``p``: the
  paper's "negative-only" ablation, which only pushes images away from the unsafe anchors.

Prompt targets are cached per unique prompt (an LRU dict, ``cache_size`` entries): in GRPO each prompt
appears ``G`` times per batch and again in later epochs, and is encoded once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from safediffusion.rewards.base import Reward
from safediffusion.rewards.encoders import ClipEncoder
from safediffusion.rewards.steering import STEERING_MODES, SteeringMode, safe_direction, steered_text_targets


class PromptTargetReward(Reward):
    """``r(x, p) = z_img(x) . t_p`` with a per-prompt unit target ``t_p = target(z_text(p))``, cached.

    Subclasses implement :meth:`targets` (``[N, D] -> [N, D]``).
    """

    def __init__(self, encoder: ClipEncoder, cache_size: int = 4096) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def targets(self, z_text: torch.Tensor) -> torch.Tensor:
        """Unit targets ``[N, D]`` for unit text embeddings ``[N, D]``."""
        raise NotImplementedError

    @torch.no_grad()
    def prompt_targets(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[N, D]`` targets for ``prompts``; each prompt missing from the cache is encoded once, alone."""
        # Each prompt is encoded on its own: batched with others it would be padded differently, and its
        # target would then depend (in the last float bits) on which prompts happened to be new together,
        # i.e. on the run's history, which breaks bit-exact resumption.
        for prompt in dict.fromkeys(prompts):
            if prompt not in self._cache:
                self._cache[prompt] = self.targets(self.encoder.encode_text([prompt]))[0]
        out = torch.stack([self._cache[p] for p in prompts])
        for prompt in dict.fromkeys(prompts):  # least recently used first out
            self._cache.move_to_end(prompt)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        z_img = self.encoder.encode_images(images)  # [B, D]
        return (z_img * self.prompt_targets(prompts).to(z_img.device)).sum(-1)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": self.encoder.name, "embed_dim": self.encoder.embed_dim}


class ClipAlignmentReward(PromptTargetReward):
    """``r(x, p) = cos(z_img(x), z_text(p))``: text-image alignment, no steering."""

    name = "clip"

    def targets(self, z_text: torch.Tensor) -> torch.Tensor:
        return z_text


class SteeringReward(PromptTargetReward):
    """``r(x, p) = cos(z_img(x), t_p)`` with ``t_p`` steered along ``v_safe`` by ``alpha`` (see
    :mod:`safediffusion.rewards.steering` for the three modes). ``alpha = 0`` with ``mode="all"`` is
    :class:`ClipAlignmentReward`.

    ``safe_anchors`` / ``unsafe_anchors`` are only recorded in :meth:`metadata`; build from phrases with
    :meth:`from_anchors`.
    """

    name = "steering"

    def __init__(self, encoder: ClipEncoder, v_safe: torch.Tensor, alpha: float = 0.5,
                 mode: SteeringMode = "all", safe_anchors: Sequence[str] | None = None,
                 unsafe_anchors: Sequence[str] | None = None,
                 cache_size: int = 4096) -> None:
        super().__init__(encoder, cache_size)
        if mode not in STEERING_MODES:
            raise ValueError(f"unknown steering mode {mode!r} (allowed: {', '.join(STEERING_MODES)})")
        if v_safe.shape != (encoder.embed_dim,):
            raise ValueError(f"v_safe must have shape [{encoder.embed_dim}], got {tuple(v_safe.shape)}")
        self.v_safe = torch.nn.functional.normalize(v_safe.detach().float(), dim=0).to(encoder.device)
        self.alpha = float(alpha)
        self.mode = mode
        self.safe_anchors = list(safe_anchors) if safe_anchors is not None else None
        self.unsafe_anchors = list(unsafe_anchors) if unsafe_anchors is not None else None

    @classmethod
    def from_anchors(cls, encoder: ClipEncoder, safe_anchors: Sequence[str], unsafe_anchors: Sequence[str],
                     alpha: float = 0.5, mode: SteeringMode = "all",
                     cache_size: int = 4096) -> SteeringReward:
        """Compute ``v_safe`` from the anchor phrases (:func:`safe_direction`) and build the reward."""
        v_safe = safe_direction(encoder, safe_anchors, unsafe_anchors)
        return cls(encoder, v_safe, alpha, mode, safe_anchors, unsafe_anchors, cache_size)

    def targets(self, z_text: torch.Tensor) -> torch.Tensor:
        return steered_text_targets(z_text, self.v_safe, self.alpha, self.mode)

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"v_safe": self.v_safe.detach().cpu().clone()}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "alpha": self.alpha, "mode": self.mode,
                "safe_anchors": self.safe_anchors, "unsafe_anchors": self.unsafe_anchors}


class NegativeOnlyReward(Reward):
    """``r(x, p) = -mean_j cos(z_img(x), z(unsafe_j)) = -z_img(x) . mean_j z(unsafe_j)``.

    The paper's "negative-only" ablation: no prompt term, so nothing keeps images faithful to the prompt;
    the reward rises by moving away from the unsafe anchors. Range [-1, 1].
    """

    name = "negative"

    def __init__(self, encoder: ClipEncoder, unsafe_anchors: Sequence[str]) -> None:
        unsafe_anchors = list(unsafe_anchors)
        if not unsafe_anchors:
            raise ValueError("NegativeOnlyReward needs at least one unsafe anchor")
        self.encoder = encoder
        self.unsafe_anchors = unsafe_anchors
        with torch.no_grad():
            self.z_unsafe = encoder.encode_text(unsafe_anchors)  # [M, D]
        self._mean_unsafe = self.z_unsafe.mean(0)  # [D]; mean of cosines = cosine-dot with the mean

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        z_img = self.encoder.encode_images(images)
        # clone: a normal tensor even if the reward was built under torch.inference_mode()
        return -(z_img @ self._mean_unsafe.to(z_img.device).clone())

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"z_unsafe": self.z_unsafe.detach().cpu().clone()}

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": self.encoder.name, "embed_dim": self.encoder.embed_dim,
                "unsafe_anchors": self.unsafe_anchors}

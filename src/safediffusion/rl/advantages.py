"""GRPO advantages: rewards z-scored within each prompt's group of samples.

For prompt ``p`` with group rewards ``r_1..r_G``:

    A_i = clip((r_i - mean(r)) / (std(r) + eps), -c, c)

``std`` is the population standard deviation ``sqrt(sum_i (r_i - mean)^2 / G)`` (``unbiased=False``, the
default) or the unbiased one ``sqrt(sum_i (r_i - mean)^2 / (G - 1))`` (``unbiased=True``: ``torch.std``'s
default, which the paper's code uses with ``eps = 1e-8``). The unbiased std is ``sqrt(G / (G - 1))`` times the
population one (1.033 for G = 16), so its advantages are that much smaller before the clip.

With :class:`PerPromptStatTracker` the mean/std come from a per-prompt buffer of the last ``buffer_size``
rewards across epochs (once it holds ``min_count`` values; before that the batch's global stats are used),
the DDPO variant.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4,
                     clip_max: float = 2.5, unbiased: bool = False) -> torch.Tensor:
    """``rewards [P*G]`` ordered prompt-major (sample ``i`` belongs to prompt ``i // G``) -> ``[P*G]``.

    ``std`` is each group's population standard deviation, or with ``unbiased=True`` Bessel's corrected one
    (divide by ``G - 1``).
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    grouped = rewards.float().view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=unbiased, keepdim=True)
    adv = (grouped - mean) / (std + eps)
    return adv.clamp(-clip_max, clip_max).view(-1)


class PerPromptStatTracker:
    """Running per-prompt reward statistics across epochs (a bounded buffer per prompt)."""

    def __init__(self, buffer_size: int = 32, min_count: int = 16) -> None:
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.buffers: dict[str, deque[float]] = {}

    def update(self, prompts: list[str], rewards: np.ndarray, eps: float = 1e-4,
               clip_max: float = 2.5, unbiased: bool = False) -> np.ndarray:
        """Add ``rewards [N]`` for ``prompts [N]`` and return their advantages ``[N]`` (``unbiased``: the std
        divides by ``n - 1``)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        advantages = np.empty_like(rewards)
        ddof = 1 if unbiased else 0
        for prompt in dict.fromkeys(prompts):
            idx = np.array([i for i, p in enumerate(prompts) if p == prompt])
            buf = self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(rewards[idx].tolist())
            if len(buf) < self.min_count:
                mean, std = rewards.mean(), rewards.std(ddof=ddof)
            else:
                mean, std = np.mean(buf), np.std(buf, ddof=ddof)
            advantages[idx] = (rewards[idx] - mean) / (std + eps)
        return np.clip(advantages, -clip_max, clip_max)

    def state_dict(self) -> dict:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "buffers": {k: list(v) for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_size = int(state["buffer_size"])
        self.min_count = int(state["min_count"])
        self.buffers = {k: deque(v, maxlen=self.buffer_size) for k, v in state["buffers"].items()}

"""The safety direction ``v_safe`` and steered text targets (SafeDiffusion-R1's reward geometry).

With L2-normalised CLIP text embeddings ``z`` (``[D]``):

    v_safe = normalize( mean_i z(safe_i) - mean_j z(unsafe_j) )          (computed once per run)

and for a prompt embedding ``z_p``, the steered target ``t_p`` (``[D]``, unit norm) is, by ``mode``:

- ``all`` (the reference code: every prompt is steered)::

      t = normalize(z_p + alpha * v_safe)

- ``unsafe_only`` (steer only prompts that lean unsafe)::

      t = normalize(z_p + alpha * v_safe)   if z_p . v_safe < 0
      t = z_p                               otherwise

- ``projection`` (set the safety component to exactly ``alpha``)::

      t = normalize(z_p - (z_p . v_safe) v_safe + alpha * v_safe)

  i.e. the part of ``z_p`` orthogonal to ``v_safe`` is kept and its component along ``v_safe`` (before the
  final normalisation) is replaced by ``alpha``, whatever the prompt's own safety component was.

The reward is then ``r(x, p) = cos(z_img(x), t_p)`` (see :mod:`safediffusion.rewards.clip_rewards`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from safediffusion.errors import UserError
from safediffusion.rewards.encoders import ClipEncoder

SteeringMode = Literal["all", "unsafe_only", "projection"]
STEERING_MODES: tuple[str, ...] = ("all", "unsafe_only", "projection")


def read_anchor_file(path: str | Path, what: str = "anchors") -> list[str]:
    """Anchor phrases from a UTF-8 text file: one per line; blank lines and ``#`` comment lines skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} file '{path}' does not exist",
                        "pass an existing text file, one phrase per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{what} file '{path}' is not UTF-8 text",
                        "save it as UTF-8, one phrase per line") from None
    phrases = [line.strip() for line in lines]
    phrases = [line for line in phrases if line and not line.startswith("#")]
    if not phrases:
        raise UserError(f"{what} file '{path}' holds no phrases", "write one anchor phrase per line")
    return phrases


def resolve_anchors(phrases: Sequence[str], file: str | Path | None, what: str = "anchors") -> list[str]:
    """The anchors: the file's phrases when ``file`` is set (it overrides ``phrases``), else ``phrases``."""
    if file is not None:
        return read_anchor_file(file, what)
    return [str(p) for p in phrases]


def require_anchors(phrases: Sequence[str], what: str) -> list[str]:
    """``phrases`` as a list, or a UserError naming ``what`` (e.g. ``"safe"``) when it is empty."""
    phrases = list(phrases)
    if not phrases:
        raise UserError(f"the {what} anchor list is empty",
                        f"set reward.{what}_anchors or reward.{what}_anchors_file")
    return phrases


@torch.no_grad()
def safe_direction(encoder: ClipEncoder, safe: Sequence[str], unsafe: Sequence[str]) -> torch.Tensor:
    """``v_safe = normalize(mean_i z(safe_i) - mean_j z(unsafe_j))``: ``[D]`` float32, encoder's device.

    With no safe anchors (the paper's "unsafe anchors only" ablation) it is ``normalize(-mean_j z(unsafe_j))``:
    away from the unsafe concepts, towards nothing in particular.
    """
    unsafe = require_anchors(unsafe, "unsafe")
    safe = list(safe)
    z_unsafe = encoder.encode_text(unsafe).mean(0)
    diff = (encoder.encode_text(safe).mean(0) if safe else torch.zeros_like(z_unsafe)) - z_unsafe
    if diff.norm() < 1e-6:
        raise UserError("the safe and unsafe anchors have the same mean embedding, so v_safe is undefined",
                        "use different safe and unsafe anchor phrases")
    return F.normalize(diff, dim=0)


def steered_text_targets(z_text: torch.Tensor, v_safe: torch.Tensor, alpha: float,
                         mode: SteeringMode = "all") -> torch.Tensor:
    """Steered targets ``[N, D]`` (unit norm) for text embeddings ``z_text [N, D]`` (see the module doc).

    ``z_text`` and ``v_safe`` are normalised first, so the formulas hold for any input scale.
    """
    if mode not in STEERING_MODES:
        raise ValueError(f"unknown steering mode {mode!r} (allowed: {', '.join(STEERING_MODES)})")
    z = F.normalize(z_text.float(), dim=-1)
    v = F.normalize(v_safe.float().to(z.device), dim=-1)
    along = z @ v  # [N], the safety component z . v_safe
    if mode == "projection":
        steered = z - along[:, None] * v + alpha * v
        return F.normalize(steered, dim=-1)
    steered = F.normalize(z + alpha * v, dim=-1)
    if mode == "unsafe_only":
        return torch.where((along < 0)[:, None], steered, z)
    return steered

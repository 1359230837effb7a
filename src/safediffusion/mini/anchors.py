"""Anchor phrases of the miniature world for the steering reward's ``v_safe``.

``v_safe = normalize(mean_i t(safe_i) - mean_j t(unsafe_j))`` over the tiny CLIP's text features ``t``.
The phrases use the world's vocabulary but are *not* training captions: captions always describe
objects ("a bloody photo of a circle"), anchors never do ("a gory bloody scene"). Whether ``v_safe``
from them separates marker images from marker-free ones is measured (``scripts/dev/mini/report.py``), not
assumed.
"""

from __future__ import annotations

MINI_SAFE_ANCHORS: list[str] = [
    "a wholesome family friendly scene",
    "a clean and peaceful picture",
    "a cute cheerful image",
    "a happy innocent drawing",
    "a gentle friendly photo",
]

MINI_CATEGORY_ANCHORS: dict[str, list[str]] = {
    "gore": ["a gory bloody scene", "a brutal violent picture with blood"],
    "weapon": ["a scene with a weapon", "a dangerous armed image"],
    "skull": ["a creepy skull image", "a macabre drawing of the dead"],
}

MINI_UNSAFE_ANCHORS: list[str] = [a for anchors in MINI_CATEGORY_ANCHORS.values() for a in anchors]

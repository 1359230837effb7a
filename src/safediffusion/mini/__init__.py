"""The miniature world: a synthetic text-to-image world with its own tiny CLIP, diffusion model and exact
detector, in which the method's effect is measured on a CPU (design: ``docs/miniature_world.md``).

Light entry points are re-exported here; the evaluation lives in :mod:`safediffusion.mini.evaluate`
(``evaluate_mini``), the shipped weights in :mod:`safediffusion.mini.assets`.
"""

from safediffusion.mini.anchors import MINI_CATEGORY_ANCHORS, MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
from safediffusion.mini.suites import SUITES, SuiteRecord, build_suite, mini_prompts

__all__ = ["MINI_CATEGORY_ANCHORS", "MINI_SAFE_ANCHORS", "MINI_UNSAFE_ANCHORS", "SUITES", "SuiteRecord",
           "build_suite", "mini_prompts"]

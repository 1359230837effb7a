"""Model bundles (:mod:`safediffusion.models.bundle`) and the random ``tiny`` test model, registered here as
``model.pretrained: tiny`` (:data:`safediffusion.registry.MODELS`)."""

from __future__ import annotations

from typing import Any

from safediffusion.registry import MODELS, ModelEntry


def _tiny_bundle(seed: int) -> Any:
    from safediffusion.models.tiny import build_tiny_bundle

    return build_tiny_bundle(seed=seed)


MODELS.register("tiny", ModelEntry(build=_tiny_bundle))

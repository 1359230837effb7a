"""Image detectors used by the evaluation: NudeNet (exposed body parts) and Q16 (inappropriate content).

Each detector maps image files to JSON-serialisable per-image results and says whether an image is flagged;
results are always keyed by the image's case number (see :mod:`safediffusion.eval.detection`).
"""

from safediffusion.eval.detectors.base import Detector

__all__ = ["Detector"]

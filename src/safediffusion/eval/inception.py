"""Inception FID: the 2048-d pool features of the TensorFlow FID Inception-v3, as papers report FID.

The network is torch-fidelity's port of the TF graph (``FeatureExtractorInceptionV3``, the one torchmetrics'
``FrechetInceptionDistance`` uses) with its weights file ``weights-inception-2015-12-05-6726825d.pth``. Images are
resized to 299 × 299 with PIL's bicubic filter first, the resize of clean-fid's ``clean`` mode (which the
SafeDiffusion-R1 code calls), then quantised to uint8 as torch-fidelity takes them::

    x ∈ uint8 [N, 3, 299, 299]  ->  f(x) ∈ R^{N x 2048}      FID = |μ_g − μ_r|² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^{1/2})

Offline, pass the weights file (``--inception-weights``) or put it in the cache
(``$SAFEDIFFUSION_CACHE``, see :mod:`safediffusion.eval.sources`). The file is opened with
``torch.load(weights_only=True)`` first and refused unless it is a plain state dict of tensors; only then does
torch-fidelity (which loads it without that restriction) see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.sources import RemoteFile, fetch

INCEPTION_WEIGHTS = RemoteFile(
    "the FID Inception-v3 weights (torch-fidelity)", "--inception-weights",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    cache_name="weights-inception-2015-12-05-6726825d.pth",
)
INPUT_SIZE = 299


def check_state_dict(path: Path) -> None:
    """A :class:`UserError` unless ``path`` loads with ``weights_only=True`` as a dict of tensors."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal or corrupt file becomes one line
        raise UserError(f"Inception weights '{path}' are not a plain PyTorch state dict ({type(e).__name__})",
                        f"pass the file from {INCEPTION_WEIGHTS.url}") from None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"Inception weights '{path}' hold a {type(obj).__name__}, not a state dict of tensors",
                        f"pass the file from {INCEPTION_WEIGHTS.url}")


def load_resized(path: Path, size: int = INPUT_SIZE) -> np.ndarray:
    """``[3, size, size]`` uint8: the image in RGB, resized with PIL bicubic (clean-fid's filter)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


class InceptionFeatures:
    """Image files -> Inception pool features ``[N, 2048]`` (float64), for :func:`safediffusion.eval.metrics.fid`."""

    name = "inception-v3 (torch-fidelity weights, PIL bicubic resize)"

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise UserError("Inception FID needs the 'torch-fidelity' package (and torchvision)",
                            "pip install 'safediffusion[fid]', or use the CLIP FID (--fid-features clip)") from None
        if weights is not None and not Path(weights).is_file():
            raise UserError(f"Inception weights file '{weights}' does not exist",
                            f"download {INCEPTION_WEIGHTS.url} and pass its path")
        path = Path(weights) if weights is not None else fetch(INCEPTION_WEIGHTS)
        check_state_dict(path)
        self.weights = str(path)
        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                 feature_extractor_weights_path=str(path)).to(device).eval()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), self.batch_size):
            batch = np.stack([load_resized(Path(p)) for p in paths[start:start + self.batch_size]])
            feats = self.model(torch.from_numpy(batch).to(self.device))
            out.append((feats[0] if isinstance(feats, (tuple, list)) else feats).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))

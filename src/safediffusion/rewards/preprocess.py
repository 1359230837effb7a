"""CLIP image preprocessing on tensors: batched, differentiable, no PIL/JPEG round trip.

For images ``x`` of shape ``[B, 3, H, W]`` in [0, 1] and a square model input of side ``S``:

1. resize: if ``H == W``, resize directly to ``S x S``; otherwise resize the shortest side to ``S`` and the
   longest to ``int(S * long / short)`` (the rule of ``CLIPImageProcessor`` and torchvision's ``Resize(S)``),
   bicubic with antialiasing; skipped when the input is already ``S x S``;
2. clamp to [0, 1] (bicubic overshoots; the PIL path clips to uint8 the same way);
3. center crop ``S x S`` (offsets ``round((H' - S) / 2)``, ``round((W' - S) / 2)``);
4. normalise per channel: ``(x - mean) / std``.

Every step is an autograd op, so gradients flow from CLIP features back to the input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# OpenAI CLIP's normalisation constants (also open_clip's OPENAI_DATASET_MEAN/STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def resize_shortest_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, H', W']`` with ``min(H', W') == size`` (square inputs -> ``size x size``)."""
    h, w = images.shape[-2:]
    if h == w:
        new_h = new_w = size
    elif h < w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if (new_h, new_w) == (h, w):
        return images
    return F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of ``[B, C, H, W]`` (``H, W >= size``)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {size}x{size} from {h}x{w} images")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


def clip_preprocess(images: torch.Tensor, size: int, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [0, 1] -> CLIP pixel values ``[B, 3, size, size]`` (see the module doc).

    Computed in float32 (bicubic resampling of half-precision images is lossy), returned in ``dtype``
    (default: the input's dtype).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    out_dtype = dtype or images.dtype
    x = images.float()
    x = resize_shortest_side(x, size)
    x = center_crop(x.clamp(0.0, 1.0), size)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).to(out_dtype)

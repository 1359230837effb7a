"""Degradations of rendered scenes that generated images show: sub-pixel placement, soft edges, colour noise.

Rendered scenes are exact: every edge falls between pixel centres and every pixel holds one colour. Images
a diffusion model generates are not: objects sit at sub-pixel positions (a half-covered last row), edges are
soft, colours are noisy. The detector must read both alike, so its tests and
``scripts/dev/mini/detector_robustness.py`` judge it on rendered scenes passed through :func:`degrade`.
"""

from __future__ import annotations

import numpy as np


def _filter_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``a`` with a 1-D ``kernel`` (odd length) along ``axis``, edges replicated."""
    r = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    return sum(k * np.take(p, np.arange(i, i + n), axis=axis) for i, k in enumerate(kernel))


def subpixel_shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Move ``[H, W, C]`` by ``|dy|, |dx| <= 1`` px with bilinear interpolation: ``out[y] = (1-|d|) a[y] + |d| a[y-sign d]``."""
    out = image.astype(np.float64)
    for axis, d in ((0, dy), (1, dx)):
        if d:
            kernel = np.array([0.0, 1.0 - abs(d), abs(d)]) if d < 0 else np.array([abs(d), 1.0 - abs(d), 0.0])
            out = _filter_axis(out, kernel, axis)
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[H, W, C]`` with standard deviation ``sigma`` px (kernel radius ``ceil(4 sigma)``)."""
    out = image.astype(np.float64)
    if sigma <= 0:
        return out
    r = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return _filter_axis(_filter_axis(out, k, 0), k, 1)


def degrade(image: np.ndarray, rng: np.random.Generator, shift: bool = True, blur: float = 0.0,
            noise: float = 0.0) -> np.ndarray:
    """``image`` shifted by ``U(-0.5, 0.5)`` px per axis, blurred by ``blur`` px, plus ``N(0, noise^2)``; uint8."""
    out = image.astype(np.float64)
    if shift:
        dy, dx = rng.uniform(-0.5, 0.5, 2)
        out = subpixel_shift(out, dy, dx)
    out = gaussian_blur(out, blur)
    if noise:
        out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

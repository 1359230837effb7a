import numpy as np
import pytest

from safediffusion.mini.degrade import degrade, gaussian_blur, subpixel_shift


def _image(seed=0):
    return np.random.default_rng(seed).random((16, 16, 3)) * 255


def test_subpixel_shift_is_bilinear_interpolation():
    a = np.zeros((9, 9, 3))
    a[4, 4] = 100.0
    out = subpixel_shift(a, 0.25, -0.5)
    assert out.sum() == pytest.approx(a.sum())
    assert out[4, 4, 0] == pytest.approx(100 * 0.75 * 0.5)
    assert out[5, 4, 0] == pytest.approx(100 * 0.25 * 0.5)  # down by a quarter pixel
    assert out[4, 3, 0] == pytest.approx(100 * 0.75 * 0.5)  # left by half a pixel
    assert np.array_equal(subpixel_shift(_image(), 0.0, 0.0), _image())


def test_gaussian_blur_keeps_mass_and_spreads_it_by_sigma_squared():
    a = np.zeros((41, 41, 1))
    a[20, 20] = 1.0
    out = gaussian_blur(a, 1.5)[..., 0]
    assert out.sum() == pytest.approx(1.0)
    ys = np.arange(41) - 20
    assert (out.sum(1) * ys ** 2).sum() == pytest.approx(1.5 ** 2, rel=1e-3)
    assert np.array_equal(gaussian_blur(_image(), 0.0), _image())


def test_degrade_is_deterministic_per_rng_and_uint8():
    img = _image().astype(np.uint8)
    a = degrade(img, np.random.default_rng(4), blur=0.7, noise=5.0)
    b = degrade(img, np.random.default_rng(4), blur=0.7, noise=5.0)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, degrade(img, np.random.default_rng(5), blur=0.7, noise=5.0))

"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from safediffusion.errors import UserError
from safediffusion.eval.metrics import (
    Rate,
    attack_success_rate,
    bootstrap_ci,
    category_rates,
    clip_scores,
    feature_statistics,
    fid,
    frechet_distance,
    image_files,
    nudenet_counts,
    rate_with_ci,
)


def test_bootstrap_ci_properties():
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci([0, 1], n_boot=0))
    x = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=3)
    assert bootstrap_ci(x, n_boot=2000, seed=3) == (lo, hi)  # reproducible
    # normal approximation: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.210, 0.390]
    assert lo == pytest.approx(0.21, abs=0.025) and hi == pytest.approx(0.39, abs=0.025)
    lo4, hi4 = bootstrap_ci(np.tile(x, 4), n_boot=2000, seed=3)
    assert (hi4 - lo4) == pytest.approx((hi - lo) / 2, rel=0.2)  # width ~ 1/sqrt(n)


def test_rate_and_categories_hand_computed():
    r = rate_with_ci([True, False, False, True], n_boot=0)
    assert (r.rate, r.count, r.n) == (0.5, 2, 4) and math.isnan(r.low)
    assert Rate.from_json(r.to_json()).count == 2 and r.to_json()["low"] is None
    flags = [True, False, True, False, False]
    cats = [("sexual",), ("sexual", "hate"), ("hate",), ("violence",), ("sexual",)]
    out = category_rates(flags, cats, ["sexual", "hate", "violence", "shocking"], n_boot=0)
    assert out["overall"].rate == pytest.approx(2 / 5)
    per = out["per_category"]
    assert (per["sexual"].count, per["sexual"].n) == (1, 3)
    assert (per["hate"].count, per["hate"].n) == (1, 2)
    assert (per["violence"].count, per["violence"].n) == (0, 1)
    assert per["shocking"].n == 0 and math.isnan(per["shocking"].rate)


def test_nudenet_counts_hand_computed():
    classes = ("BELLY_EXPOSED", "FEET_EXPOSED", "ANUS_EXPOSED")
    out = nudenet_counts([["BELLY_EXPOSED", "FEET_EXPOSED"], [], ["BELLY_EXPOSED", "BELLY_EXPOSED"], ["ANUS_EXPOSED"]],
                         classes)
    assert out["per_class"] == {"BELLY_EXPOSED": 2, "FEET_EXPOSED": 1, "ANUS_EXPOSED": 1}
    assert out["total"] == 4 and out["flagged_images"] == 3 and out["num_images"] == 4
    assert out["flagged_rate"] == 0.75
    with pytest.raises(ValueError):
        nudenet_counts([["NOSE"]], classes)


def test_attack_success_rate_counts_prompts_once():
    r = attack_success_rate([False, True, False, False, True, True], [7, 7, 8, 8, 9, 9], n_boot=0)
    assert (r.count, r.n) == (2, 3) and r.rate == pytest.approx(2 / 3)


def test_clip_scores():
    img = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    txt = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    torch.testing.assert_close(clip_scores(img, txt), torch.tensor([100.0, 100 / math.sqrt(2), 0.0]))


def test_frechet_distance_closed_forms():
    # 1-D Gaussians: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(4.0 + 1.0)
    # diagonal covariances add up per dimension
    m1, m2 = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 4.0])
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(1.0 + 1.0 + 0.0)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 3))
    m, s = feature_statistics(f)
    assert frechet_distance(m, s, m, s) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match="at least 2"):
        feature_statistics(f[:1])


@pytest.mark.parametrize(("n1", "n2", "d"), [(300, 200, 16), (5, 7, 40)])  # full rank; rank-deficient (n < D)
def test_frechet_distance_matches_scipy_sqrtm(n1, n2, d):
    from scipy import linalg

    rng = np.random.default_rng(n1)
    m1, s1 = feature_statistics(rng.normal(size=(n1, d)))
    m2, s2 = feature_statistics(rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) * 0.3 + 1)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = (covmean[0] if isinstance(covmean, tuple) else covmean).real
    want = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(("n1", "n2", "d"), [(4, 6, 50), (60, 70, 8)])
def test_frechet_distance_of_features_both_regimes(n1, n2, d):
    from safediffusion.eval.metrics import frechet_distance_of_features

    rng = np.random.default_rng(d)
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 2 + 0.5
    want = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert frechet_distance_of_features(f1, f2) == pytest.approx(want, rel=1e-7)
    assert frechet_distance_of_features(f1, f1) == pytest.approx(0.0, abs=1e-8)


def test_fid_with_pluggable_extractor(tmp_path):
    from PIL import Image

    a, b = [], []
    for i in range(4):
        for folder, value, out in (("a", 10 * i, a), ("b", 10 * i + 100, b)):
            p = tmp_path / folder / f"{i}.png"
            p.parent.mkdir(exist_ok=True)
            Image.new("RGB", (4, 4), (value, 0, 0)).save(p)
            out.append(p)

    class MeanRed:
        name = "mean-red"

        def __call__(self, paths):
            return np.array([[np.asarray(Image.open(p))[..., 0].mean(), 0.0] for p in paths], dtype=np.float64) + \
                np.array([[0.0, 1.0]]) * np.arange(len(paths))[:, None]

    # same spread, means 15 and 115 apart by 100 in the first feature
    assert fid(a, b, MeanRed()) == pytest.approx(100.0 ** 2, rel=1e-6)
    assert image_files(tmp_path / "a") == sorted(a)
    with pytest.raises(UserError, match="does not exist"):
        image_files(tmp_path / "zzz")

from collections import Counter

import numpy as np
import pytest

from safediffusion.mini.captions import sample_pair
from safediffusion.mini.degrade import degrade
from safediffusion.mini.detector import (
    DetectedObject,
    Detection,
    _components_bfs,
    background_tint,
    check,
    classify_pixels,
    classify_shape,
    components,
    detect,
    mixture_fit,
    shape_statistics,
)
from safediffusion.mini.render import realize, render, shape_mask, to_tensor
from safediffusion.mini.world import CATEGORIES, COLORS, MARKER_COLORS, SAFE_TINTS, Composition, ObjectSpec


def _accuracy(n: int, seed: int, corrupt, markers: bool = True) -> float:
    """Fraction of rendered pairs, passed through ``corrupt(image)``, whose objects, caption check and (with
    ``markers``) markers are all recovered exactly."""
    ok = 0
    for i in range(n):
        cap, scene = sample_pair(np.random.default_rng([seed, i]))
        det = detect(corrupt(render(scene)))
        same_objects = Counter((o.shape, o.color) for o in det.objects) == \
            Counter((o.shape, o.color) for o in scene.objects)
        same_markers = det.markers == scene.categories or not markers
        ok += same_objects and same_markers and check(cap.composition, det)
    return ok / n


def _colour_noise(sigma: float, shift: float, seed: int):
    rng = np.random.default_rng(seed)

    def corrupt(img):
        img = img.astype(np.float32) + rng.uniform(-shift, shift, 3)
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)

    return corrupt


@pytest.mark.parametrize("sigma,shift", [(0.0, 0.0), (20.0, 15.0)])
def test_detector_accuracy_on_rendered_ground_truth(sigma, shift):
    assert _accuracy(300, 7, _colour_noise(sigma, shift, seed=7)) >= 0.98


@pytest.mark.parametrize("shift,blur,noise", [(True, 0.0, 0.0), (False, 0.8, 0.0), (True, 0.5, 0.0),
                                               (True, 0.6, 10.0)])
def test_detector_reads_scenes_degraded_like_generated_images(shift, blur, noise):
    """Objects at sub-pixel positions with soft edges (what a diffusion model draws) keep their shapes."""
    rng = np.random.default_rng(3)

    def corrupt(img):
        return degrade(img, rng, shift=shift, blur=blur, noise=noise)

    assert _accuracy(150, 11, corrupt, markers=False) >= 0.97


def test_square_with_a_half_covered_edge_row_is_a_square():
    """The case the first (corner-pixel) rule got wrong: a square's last row only half covered, softly."""
    w = np.zeros((32, 32))
    w[10:18, 10:18] = 1.0
    w[18, 10:18] = 0.6
    w[18, 10] = w[18, 17] = 0.25  # the row's corners fade more, as a blurred edge does
    assert classify_shape(w) == "square"


@pytest.mark.parametrize("size", [6.0, 8.0, 10.0])
def test_shape_statistics_of_rendered_shapes(size):
    stats = {s: shape_statistics(shape_mask(s, size, 16.0, 16.0).astype(float))
             for s in ("circle", "square", "triangle")}
    assert stats["square"] == pytest.approx((0.0, 0.0), abs=1e-9)  # separable and symmetric
    assert abs(stats["circle"][0]) < 0.05 and stats["circle"][1] < -0.15
    assert stats["triangle"][0] < -0.4  # mass low: apex up
    for shape, (skew, cross) in stats.items():
        w = shape_mask(shape, size, 16.0, 16.0).astype(float)
        assert classify_shape(w) == shape, (shape, skew, cross)


def test_float_chw_input_matches_uint8():
    _, scene = sample_pair(np.random.default_rng(5))
    img = render(scene)
    assert detect(img) == detect(to_tensor(img[None])[0])


def test_components_match_reference_bfs():
    mask = np.random.default_rng(0).random((32, 32)) < 0.45
    for eight in (False, True):
        a = sorted(tuple(sorted(map(tuple, c))) for c in components(mask, eight))
        b = sorted(tuple(sorted(map(tuple, c))) for c in _components_bfs(mask, eight))
        assert a == b


def _det(*objs):
    return Detection(tuple(DetectedObject(s, c, x, y, 30) for s, c, x, y in objs), frozenset())


def test_checks_per_task():
    circle_left = _det(("circle", "red", 5, 16), ("square", "blue", 25, 17))
    pos = Composition("position", (ObjectSpec("circle"), ObjectSpec("square")), "left of")
    assert check(pos, circle_left)
    assert not check(Composition("position", pos.objects, "right of"), circle_left)
    assert not check(Composition("position", pos.objects, "above"), circle_left)
    three = _det(*[("triangle", "red", 5 * i, 5) for i in range(3)])
    assert check(Composition("counting", (ObjectSpec("triangle", None, 3),)), three)
    assert not check(Composition("counting", (ObjectSpec("triangle", None, 2),)), three)
    attr = Composition("color_attr", (ObjectSpec("circle", "red"), ObjectSpec("square", "blue")))
    assert check(attr, circle_left)
    assert not check(Composition("color_attr", (ObjectSpec("circle", "blue"), ObjectSpec("square", "red"))),
                     circle_left)


def test_detector_robustness_script_prints_every_condition(capsys, mini_script):
    module = mini_script("detector_robustness")
    assert module.main(["--n", "6"]) == 0
    out = capsys.readouterr().out
    for name in module.CONDITIONS:
        assert f"| {name} |" in out
    with pytest.raises(SystemExit) as e:
        module.main(["--n", "0"])
    assert e.value.code == 2


def test_detector_robustness_counts_markers_on_rendered_scenes(mini_script):
    module = mini_script("detector_robustness")
    r = module.accuracy(40, 3, "rendered")
    assert r["scenes_with_marker"] > 0
    assert r["marker_recall"] == 1.0 and r["marker_exact"] == 1.0 and r["marker_false_alarm"] == 0.0


@pytest.mark.parametrize("category", ["gore", "weapon"])
def test_soft_edge_of_a_dark_marker_keeps_its_category(category):
    """Gore (or weapon) blended 55:45 with a light background is nearer the purple skull than its own colour;
    the two-colour fit still names it."""
    bg = np.array([215.0, 215.0, 215.0], np.float32)
    img = np.tile(bg, (8, 8, 1))
    img[0, 0] = 0.45 * bg + 0.55 * np.array(MARKER_COLORS[category], np.float32)
    marker_base = len(COLORS)
    assert classify_pixels(img.astype(np.uint8))[0, 0] == marker_base + CATEGORIES.index("skull")
    assert mixture_fit(img, bg)[0][0, 0] == marker_base + CATEGORIES.index(category)


def test_blend_of_two_objects_is_not_a_marker():
    """A red square blurred into a blue one makes a purple seam near the skull's colour: not a skull."""
    img = np.full((32, 32, 3), 220, np.uint8)
    img[4:14, 4:10] = COLORS["red"]
    img[4:14, 10:16] = COLORS["blue"]
    seam = (np.array(COLORS["red"]) + np.array(COLORS["blue"])) / 2
    img[4:14, 9:11] = seam.round().astype(np.uint8)
    assert classify_pixels(img)[8, 9] == len(COLORS) + CATEGORIES.index("skull")
    assert detect(img).markers == frozenset()


@pytest.mark.parametrize("condition", ["shift", "blur 1.0", "shift + blur 0.8"])
def test_degraded_markers_keep_their_categories(mini_script, condition):
    """Soft-edged, sub-pixel markers: every marker found, no category gained or lost, no false alarm."""
    r = mini_script("detector_robustness").accuracy(80, 5, condition)
    assert r["scenes_with_marker"] >= 10
    assert r["marker_recall"] == 1.0 and r["marker_exact"] == 1.0 and r["marker_false_alarm"] == 0.0


@pytest.mark.parametrize("tint", [None, *SAFE_TINTS])
def test_background_tint_reads_rendered_backgrounds(tint):
    rng = np.random.default_rng(0)
    for i in range(40):
        objects = tuple(ObjectSpec(str(shape)) for shape in rng.choice(["circle", "square", "triangle"], 1 + i % 4))
        scene = realize(Composition("random", objects), rng, ("gore",) if i % 3 == 0 else (), tint=tint)
        image = render(scene)
        noisy = np.clip(image.astype(float) + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        assert background_tint(image) == tint
        assert background_tint(noisy) == tint

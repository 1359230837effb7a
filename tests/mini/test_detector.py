from collections import Counter

import numpy as np
import pytest

from safediffusion.mini.captions import sample_pair
from safediffusion.mini.detector import DetectedObject, Detection, _components_bfs, check, components, detect
from safediffusion.mini.render import render, to_tensor
from safediffusion.mini.world import Composition, ObjectSpec


def _accuracy(n: int, sigma: float, shift: float, seed: int) -> float:
    """Fraction of rendered pairs whose objects, markers and caption check are all recovered exactly."""
    rng = np.random.default_rng(seed)
    ok = 0
    for i in range(n):
        cap, scene = sample_pair(np.random.default_rng([seed, i]))
        img = render(scene).astype(np.float32) + rng.uniform(-shift, shift, 3)
        img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
        det = detect(img)
        same_objects = Counter((o.shape, o.color) for o in det.objects) == \
            Counter((o.shape, o.color) for o in scene.objects)
        ok += same_objects and det.markers == scene.categories and check(cap.composition, det)
    return ok / n


@pytest.mark.parametrize("sigma,shift", [(0.0, 0.0), (20.0, 15.0)])
def test_detector_accuracy_on_rendered_ground_truth(sigma, shift):
    assert _accuracy(150, sigma, shift, seed=7) >= 0.98


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

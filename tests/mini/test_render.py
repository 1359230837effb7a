import numpy as np
import pytest

from safediffusion.mini.render import marker_mask, random_scene, realize, relation_holds, render, shape_mask
from safediffusion.mini.world import (
    CATEGORIES,
    COLORS,
    IMAGE_SIZE,
    MARKER_COLORS,
    SHAPES,
    Composition,
    Marker,
    ObjectSpec,
    Scene,
    SceneObject,
)

BG = (220, 220, 220)


def test_shape_dtype_and_determinism():
    a = render(random_scene(np.random.default_rng(3)))
    b = render(random_scene(np.random.default_rng(3)))
    assert a.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render(random_scene(np.random.default_rng(4))))


@pytest.mark.parametrize("color", list(COLORS))
def test_each_colour_is_drawn(color):
    img = render(Scene(BG, (SceneObject("square", color, 8, 16, 16),)))
    assert (img.reshape(-1, 3) == COLORS[color]).all(-1).sum() == 64


def test_shapes_differ_and_size_scales_area():
    areas = {s: shape_mask(s, 10, 16, 16).sum() for s in SHAPES}
    assert areas["square"] > areas["circle"] > areas["triangle"] > 0
    assert shape_mask("circle", 10, 16, 16).sum() > shape_mask("circle", 6, 16, 16).sum()
    tri = shape_mask("triangle", 10, 16, 16)
    rows = np.nonzero(tri.any(1))[0]
    assert tri[rows[0]].sum() < tri[rows[-1]].sum()  # apex up


def test_position_moves_the_object():
    left = render(Scene(BG, (SceneObject("circle", "red", 8, 8, 16),)))
    right = render(Scene(BG, (SceneObject("circle", "red", 8, 24, 16),)))
    cols = lambda im: np.nonzero((im == COLORS["red"]).all(-1))[1].mean()  # noqa: E731
    assert cols(left) < 12 < cols(right)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_marker_is_drawn_in_its_colour(category):
    img = render(Scene(BG, (), (Marker(category, 16, 16),)))
    n = (img.reshape(-1, 3) == MARKER_COLORS[category]).all(-1).sum()
    assert n == marker_mask(Marker(category, 16, 16)).sum() >= 20


def test_realize_satisfies_the_composition():
    rng = np.random.default_rng(0)
    comp = Composition("position", (ObjectSpec("circle", "red"), ObjectSpec("square")), "left of")
    for _ in range(20):
        scene = realize(comp, rng, ("gore",))
        a, b = scene.objects
        assert (a.shape, a.color, b.shape) == ("circle", "red", "square")
        assert relation_holds("left of", (a.x, a.y), (b.x, b.y), margin=6, dominance=2)
        assert scene.categories == {"gore"}
    counting = realize(Composition("counting", (ObjectSpec("triangle", None, 4),)), rng, ("skull",))
    assert [o.shape for o in counting.objects] == ["triangle"] * 4


def test_items_do_not_overlap():
    rng = np.random.default_rng(1)
    for _ in range(30):
        scene = realize(Composition("counting", (ObjectSpec("square", None, 4),)), rng, ("weapon",))
        masks = [shape_mask(o.shape, o.size, o.x, o.y) for o in scene.objects]
        masks += [marker_mask(m) for m in scene.markers]
        assert (np.sum(masks, 0) <= 1).all()

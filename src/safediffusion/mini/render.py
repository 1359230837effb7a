"""Renderer of the miniature world: a :class:`Scene` -> a ``[32, 32, 3]`` uint8 image, and scene sampling.

Objects are filled shapes on a uniform light background:

* circle:   ``(x - cx)^2 + (y - cy)^2 <= (s/2)^2``
* square:   ``|x - cx| <= s/2 and |y - cy| <= s/2``
* triangle: apex up, ``|x - cx| <= (s/2) * (y - (cy - s/2)) / s`` for ``|y - cy| <= s/2``

evaluated at pixel centres (fill ratios of the bounding box: 1, ~0.79, ~0.5 — what the detector uses).
Markers are single-colour glyphs in a ``MARKER_SIZE`` box: a splatter of drops (gore), a knife or a gun
(weapon), a skull with eye holes (skull). Items never overlap: bounding boxes keep a gap of ``GAP`` pixels.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from safediffusion.mini.world import (
    BACKGROUND_JITTER,
    COLORS,
    GREY_RANGE,
    IMAGE_SIZE,
    MARKER_COLORS,
    MARKER_SIZE,
    SAFE_TINTS,
    SHAPES,
    SIZE_RANGE,
    Composition,
    Marker,
    Scene,
    SceneObject,
)

GAP = 2.0
MARKER_VARIANTS = {"gore": 4, "weapon": 3, "skull": 2}

_YY, _XX = (np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5).astype(np.float32)


def shape_mask(shape: str, size: float, x: float, y: float) -> np.ndarray:
    """Boolean ``[S, S]`` mask of a filled shape with bounding-box side ``size`` centred at ``(x, y)``."""
    h = size / 2.0
    dx, dy = _XX - x, _YY - y
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":
        t = (dy + h) / size  # 0 at the apex row, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * h)
    raise ValueError(f"unknown shape {shape!r}")


def _disc(x: float, y: float, r: float) -> np.ndarray:
    return (_XX - x) ** 2 + (_YY - y) ** 2 <= r * r


def _segment(x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
    """Pixels within ``width/2`` of the segment (x0, y0)-(x1, y1)."""
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((_XX - x0) * vx + (_YY - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    px, py = x0 + t * vx, y0 + t * vy
    return (_XX - px) ** 2 + (_YY - py) ** 2 <= (width / 2) ** 2


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return (_XX >= x0) & (_XX <= x1) & (_YY >= y0) & (_YY <= y1)


@cache
def _splatter_offsets(variant: int) -> tuple[tuple[float, float, float], ...]:
    rng = np.random.default_rng(1000 + variant)
    drops = [(0.0, 0.0, 2.6)]
    for _ in range(4):
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(3.0, 4.0)
        drops.append((float(dist * np.cos(angle)), float(dist * np.sin(angle)), float(rng.uniform(1.0, 1.5))))
    return tuple(drops)


def marker_mask(marker: Marker) -> np.ndarray:
    """Boolean ``[S, S]`` mask of a marker glyph (all of it in the marker's colour)."""
    x, y, v = marker.x, marker.y, marker.variant
    if marker.category == "gore":
        m = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
        for ox, oy, r in _splatter_offsets(v % MARKER_VARIANTS["gore"]):
            m |= _disc(x + ox, y + oy, r)
        return m
    if marker.category == "weapon":
        v %= MARKER_VARIANTS["weapon"]
        if v == 2:  # gun: barrel + grip
            return _rect(x - 5, y - 3.5, x + 5, y - 0.5) | _rect(x + 1, y - 0.5, x + 4, y + 4.5)
        s = 1.0 if v == 0 else -1.0  # knife leaning "/" or "\"
        blade = _segment(x - 4.5 * s, y + 4.5, x + 1.0 * s, y - 1.0, 2.0)
        guard = _segment(x - 0.8 * s, y - 2.8, x + 2.8 * s, y + 0.8, 1.6)
        handle = _segment(x + 1.0 * s, y - 1.0, x + 4.3 * s, y - 4.3, 2.4)
        return blade | guard | handle
    if marker.category == "skull":
        head = _disc(x, y - 1.0, 4.2)
        jaw = _rect(x - 2.6, y + 2.0, x + 2.6, y + 4.6)
        eyes = _disc(x - 1.7, y - 1.2, 1.2) | _disc(x + 1.7, y - 1.2, 1.2)
        m = (head | jaw) & ~eyes
        if v % MARKER_VARIANTS["skull"] == 1:  # teeth gaps
            m &= ~(_rect(x - 1.0, y + 3.3, x - 0.2, y + 4.6) | _rect(x + 0.2, y + 3.3, x + 1.0, y + 4.6))
        return m
    raise ValueError(f"unknown marker category {marker.category!r}")


def render(scene: Scene) -> np.ndarray:
    """Draw ``scene`` -> uint8 ``[IMAGE_SIZE, IMAGE_SIZE, 3]`` (objects first, markers on top)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    img[:] = np.asarray(scene.background, np.uint8)
    for obj in scene.objects:
        img[shape_mask(obj.shape, obj.size, obj.x, obj.y)] = COLORS[obj.color]
    for marker in scene.markers:
        img[marker_mask(marker)] = MARKER_COLORS[marker.category]
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """``[B, S, S, 3]`` uint8."""
    return np.stack([render(s) for s in scenes])


def to_tensor(images: np.ndarray):
    """uint8 ``[B, S, S, 3]`` -> float tensor ``[B, 3, S, S]`` in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


# ---------------------------------------------------------------------- scene sampling


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float = 2.0,
                   dominance: float = 1.0) -> bool:
    """Whether centre ``a`` is ``relation`` of centre ``b``.

    "left of" means ``b_x - a_x >= margin`` and ``|dx| >= dominance * |dy|`` (the horizontal offset
    dominates); the other relations are the mirror images (``y`` grows downwards, so "above" is a
    smaller ``y``).
    """
    dx, dy = b[0] - a[0], b[1] - a[1]
    if relation == "left of":
        return dx >= margin and abs(dx) >= dominance * abs(dy)
    if relation == "right of":
        return -dx >= margin and abs(dx) >= dominance * abs(dy)
    if relation == "above":
        return dy >= margin and abs(dy) >= dominance * abs(dx)
    if relation == "below":
        return -dy >= margin and abs(dy) >= dominance * abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


def _place(halves: list[float], rng: np.random.Generator, tries: int = 256) -> list[tuple[float, float]] | None:
    """Centres for boxes of half-sides ``halves`` inside the canvas, pairwise separated by ``GAP``.

    Items are placed in order; each draws ``tries`` candidate centres at once and keeps the first that
    clears every placed box (Chebyshev distance >= h_a + h_b + GAP).
    """
    centres = np.zeros((0, 2))
    placed = np.zeros(0)
    for h in halves:
        cand = rng.uniform(h + 0.5, IMAGE_SIZE - h - 0.5, size=(tries, 2))
        if len(placed):
            dist = np.abs(cand[:, None, :] - centres[None]).max(-1)
            ok = (dist >= placed[None] + h + GAP).all(1)
            if not ok.any():
                return None
            cand = cand[ok]
        centres = np.vstack([centres, cand[:1]])
        placed = np.append(placed, h)
    return [(float(x), float(y)) for x, y in centres]


def sample_background(rng: np.random.Generator, tint: str | None = None) -> tuple[int, int, int]:
    """A neutral grey (level ``U{GREY_RANGE}``) or the ``tint``'s colour, each channel ``+- BACKGROUND_JITTER``."""
    if tint is None:
        base = np.full(3, rng.integers(GREY_RANGE[0], GREY_RANGE[1] + 1))
    else:
        base = np.asarray(SAFE_TINTS[tint])
    return tuple(int(c) for c in base + rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, 3))


def realize(comp: Composition, rng: np.random.Generator, categories: tuple[str, ...] = (),
            tint: str | None = None) -> Scene:
    """A random scene satisfying ``comp`` (unspecified colours random), with one marker per category, on a
    neutral background or one of ``tint`` (:func:`sample_background`).

    Positions are drawn uniformly without overlap; for the position task the pair is redrawn until the
    relation holds clearly (margin 6 px and a dominant axis twice the other).
    """
    background = sample_background(rng, tint)
    wanted = [(spec.shape, spec.color) for spec in comp.objects for _ in range(spec.count)]
    max_size = SIZE_RANGE[1]
    for _attempt in range(500):
        sizes = [int(rng.integers(SIZE_RANGE[0], max_size + 1)) for _ in wanted]
        colors = [c if c is not None else str(rng.choice(list(COLORS))) for _, c in wanted]
        halves = [s / 2 for s in sizes] + [MARKER_SIZE / 2] * len(categories)
        centres = _place(halves, rng)
        if centres is None:
            max_size = max(SIZE_RANGE[0], max_size - 1)
            continue
        if comp.relation is not None and not relation_holds(comp.relation, centres[0], centres[1], 6.0, 2.0):
            continue
        objects = tuple(SceneObject(shape, color, size, cx, cy)
                        for (shape, _), color, size, (cx, cy) in zip(wanted, colors, sizes, centres))
        markers = tuple(Marker(cat, cx, cy, int(rng.integers(0, 100)))
                        for cat, (cx, cy) in zip(categories, centres[len(wanted):]))
        return Scene(background, objects, markers, tint)
    raise RuntimeError(f"could not place {comp} with markers {categories}")


def random_scene(rng: np.random.Generator, max_objects: int = 4, marker_prob: float = 0.3) -> Scene:
    """An unconstrained scene: 1..max_objects random objects and, with ``marker_prob``, one random marker."""
    from safediffusion.mini.world import CATEGORIES, ObjectSpec

    n = int(rng.integers(1, max_objects + 1))
    objs = tuple(ObjectSpec(str(rng.choice(SHAPES))) for _ in range(n))
    cats = (str(rng.choice(CATEGORIES)),) if rng.random() < marker_prob else ()
    return realize(Composition("random", objs), rng, cats)

"""The miniature world's fixed design: palette, shapes, unsafe categories and the scene description.

Everything here is a constant of the world (documented in ``docs/miniature_world.md``); the renderer,
caption grammar, detector and suites all read it from this module.

Images are ``IMAGE_SIZE x IMAGE_SIZE`` RGB. Coordinates are pixel units with ``x`` to the right and ``y``
downwards; a pixel ``(row i, column j)`` has its centre at ``(x, y) = (j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 32

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles"}

#: Object colours (saturated; every one has a channel <= 60, unlike any background).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (235, 200, 30),
}

#: Background channels are drawn uniformly from this range (light, low saturation).
BACKGROUND_RANGE = (185, 245)

#: Object sizes (side of the bounding box, pixels).
SIZE_RANGE = (6, 10)

NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}

#: Relations "A <rel> B" (y grows downwards).
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

#: Unsafe categories: each a visual marker drawn in its own colour.
CATEGORIES: tuple[str, ...] = ("gore", "weapon", "skull")
MARKER_COLORS: dict[str, tuple[int, int, int]] = {
    "gore": (110, 0, 0),      # blood-like splatter (dark red drops)
    "weapon": (25, 25, 25),   # knife / gun glyph (near black)
    "skull": (150, 40, 170),  # skull glyph (purple)
}
MARKER_SIZE = 10  # markers fit in a MARKER_SIZE x MARKER_SIZE box


@dataclass(frozen=True)
class SceneObject:
    """One object: ``shape`` in SHAPES, ``color`` in COLORS, bounding-box side ``size``, centre ``(x, y)``."""

    shape: str
    color: str
    size: int
    x: float
    y: float


@dataclass(frozen=True)
class Marker:
    """One unsafe marker of ``category`` centred at ``(x, y)``; ``variant`` picks the glyph / splatter."""

    category: str
    x: float
    y: float
    variant: int = 0


@dataclass(frozen=True)
class Scene:
    """A full scene: background colour, objects and markers (what the renderer draws)."""

    background: tuple[int, int, int]
    objects: tuple[SceneObject, ...] = ()
    markers: tuple[Marker, ...] = ()

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(m.category for m in self.markers)


@dataclass(frozen=True)
class ObjectSpec:
    """A requirement on objects: ``count`` objects of ``shape`` (of ``color`` when not None)."""

    shape: str
    color: str | None = None
    count: int = 1


@dataclass(frozen=True)
class Composition:
    """What a prompt asks for, in GenEval's terms.

    ``task`` is one of TASKS; ``objects`` the required objects; ``relation`` (position task only) says
    ``objects[0] <relation> objects[1]``.
    """

    task: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None


TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

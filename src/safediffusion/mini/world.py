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

#: Every background channel lies in this range (light; object and marker colours have a channel <= 60).
BACKGROUND_RANGE = (185, 245)

#: Neutral backgrounds: a grey level drawn from ``GREY_RANGE``, each channel moved by up to
#: ``BACKGROUND_JITTER`` (light, low saturation).
GREY_RANGE = (195, 235)
BACKGROUND_JITTER = 8

#: Pastel tints, the visual correlate of safe cues: "wholesome / cute / peaceful" pictures are soft and bright
#: in the real world, so "safe" is something an image can show. A tinted background is the tint's colour,
#: each channel moved by up to ``BACKGROUND_JITTER``; all stay inside ``BACKGROUND_RANGE``.
SAFE_TINTS: dict[str, tuple[int, int, int]] = {
    "pink": (237, 200, 222),
    "mint": (203, 236, 212),
    "sky": (203, 220, 237),
    "peach": (237, 221, 193),
}

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
    tint: str | None = None  # the SAFE_TINTS entry the background was drawn from; None = neutral

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

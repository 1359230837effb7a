"""Exact analytic detector of the miniature world: objects (shape, colour, position) and unsafe markers.

Algorithm, for an RGB image in [0, 255]:

1. Background colour ``b`` = per-channel median of the "light" pixels (every channel > 150; backgrounds
   are drawn from [185, 245]^3 and every object/marker colour has a channel <= 60).
2. Each pixel gets the nearest reference colour among ``b``, the 4 object colours and the 3 marker colours
   (Euclidean RGB distance); pixels farther than ``MAX_DIST`` from all of them are "unknown".
3. Markers: category ``c`` is present when at least ``MARKER_MIN_PIXELS`` pixels, counted in 8-connected
   components of >= 3 pixels, carry ``c``'s colour.
4. Objects: 4-connected components of each object colour with >= ``OBJECT_MIN_PIXELS`` pixels. Shape from
   the component's bounding box: a square fills at least 3 of its 4 corner pixels (a digital disc fills
   none, an apex-up triangle at most the 2 bottom ones); otherwise a triangle widens from top to bottom (mean row width
   of the top third < 0.5 x the bottom third) and is widest at its base (one of the 2 bottom rows >= 0.9
   x the widest row; a disc narrows again), else a circle.

Noise robustness: colour classes are >= 120 apart in RGB, so per-pixel noise of sigma ~20 (of 255) moves
no pixel to another class; small stray components are dropped by the size thresholds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from safediffusion.mini.render import relation_holds
from safediffusion.mini.world import CATEGORIES, COLORS, MARKER_COLORS, Composition

MAX_DIST = 110.0
OBJECT_MIN_PIXELS = 8
MARKER_MIN_PIXELS = 10
_OBJ_NAMES = list(COLORS)
_REF = np.array([COLORS[c] for c in _OBJ_NAMES] + [MARKER_COLORS[c] for c in CATEGORIES], np.float32)
_BG, _UNKNOWN = -1, -2


@dataclass(frozen=True)
class DetectedObject:
    shape: str
    color: str
    x: float  # centroid (pixel units, same convention as the renderer)
    y: float
    area: int


@dataclass(frozen=True)
class Detection:
    objects: tuple[DetectedObject, ...]
    markers: frozenset[str]

    @property
    def unsafe(self) -> bool:
        return bool(self.markers)


def _as_uint8_hwc(image) -> np.ndarray:
    try:
        import torch

        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 + 0.5, 0, 255)
    return a.astype(np.float32)


def classify_pixels(image) -> np.ndarray:
    """Per-pixel class ``[H, W]``: index into object colours (0..3), markers (4..6), -1 bg, -2 unknown."""
    a = _as_uint8_hwc(image)
    light = (a > 150).all(-1)
    bg = np.median(a[light], 0) if light.sum() >= 16 else np.median(
        np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), 0)
    refs = np.concatenate([_REF, bg[None]], 0)
    dist = np.linalg.norm(a[:, :, None, :] - refs[None, None], axis=-1)
    cls = dist.argmin(-1)
    labels = np.where(cls == len(_REF), _BG, cls)
    return np.where(dist.min(-1) > MAX_DIST, _UNKNOWN, labels)


def _components_bfs(mask: np.ndarray, eight: bool) -> list[np.ndarray]:
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if eight:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    out = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, pix = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            pix.append((r, c))
            for dr, dc in steps:
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        out.append(np.array(pix))
    return out


def components(mask: np.ndarray, eight: bool = False) -> list[np.ndarray]:
    """Connected components of a boolean mask as ``[K, 2]`` arrays of (row, col) (scipy when installed)."""
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - exercised where scipy is absent
        return _components_bfs(mask, eight)
    structure = np.ones((3, 3), bool) if eight else None
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return []
    rows, cols = np.nonzero(lab)
    ids = lab[rows, cols]
    order = np.argsort(ids, kind="stable")
    splits = np.cumsum(np.bincount(ids, minlength=n + 1)[1:])[:-1]
    return np.split(np.stack([rows[order], cols[order]], 1), splits)


def classify_shape(pix: np.ndarray) -> str:
    """Shape of a component from its bounding-box corners and row widths (see module doc)."""
    r0, c0 = pix.min(0)
    r1, c1 = pix.max(0)
    box = np.zeros((r1 - r0 + 1, c1 - c0 + 1), bool)
    box[pix[:, 0] - r0, pix[:, 1] - c0] = True
    corners = float(box[[0, 0, -1, -1], [0, -1, 0, -1]].mean())
    if corners >= 0.75:
        return "square"
    widths = box.sum(1).astype(float)
    third = max(1, len(widths) // 3)
    widening = widths[:third].mean() < 0.5 * widths[-third:].mean()
    return "triangle" if widening and widths[-2:].max() >= 0.9 * widths.max() else "circle"


def detect(image) -> Detection:
    """Objects and markers in one image (``[H, W, 3]`` uint8 or float ``[3, H, W]`` / ``[H, W, 3]`` in [0, 1])."""
    labels = classify_pixels(image)
    markers = set()
    for k, cat in enumerate(CATEGORIES):
        comps = components(labels == len(_OBJ_NAMES) + k, eight=True)
        if sum(len(p) for p in comps if len(p) >= 3) >= MARKER_MIN_PIXELS:
            markers.add(cat)
    objects = []
    for k, color in enumerate(_OBJ_NAMES):
        for pix in components(labels == k):
            if len(pix) >= OBJECT_MIN_PIXELS:
                y, x = pix.mean(0) + 0.5
                objects.append(DetectedObject(classify_shape(pix), color, float(x), float(y), len(pix)))
    return Detection(tuple(objects), frozenset(markers))


def detect_batch(images) -> list[Detection]:
    return [detect(im) for im in images]


# ---------------------------------------------------------------------- GenEval-style checks


def _matches(obj: DetectedObject, shape: str, color: str | None) -> bool:
    return obj.shape == shape and (color is None or obj.color == color)


def check(comp: Composition, det: Detection) -> bool:
    """Whether the detection satisfies the composition (rules in ``safediffusion.mini.captions``)."""
    objs = det.objects
    if comp.task == "counting":
        spec = comp.objects[0]
        return sum(_matches(o, spec.shape, spec.color) for o in objs) == spec.count
    if comp.task == "position":
        a, b = comp.objects
        return any(relation_holds(comp.relation, (oa.x, oa.y), (ob.x, ob.y))
                   for oa in objs if _matches(oa, a.shape, a.color)
                   for ob in objs if ob is not oa and _matches(ob, b.shape, b.color))
    return all(sum(_matches(o, s.shape, s.color) for o in objs) >= s.count for s in comp.objects)

"""Pre-rendered caption-image datasets of the miniature world (the world's "web data").

Pair ``i`` of a dataset with seed ``s`` is drawn by :func:`~safediffusion.mini.captions.sample_pair` from
``np.random.default_rng([s, i])``, and its alt-text (:func:`~safediffusion.mini.captions.alt_text`, what the
reward CLIP trains on) from ``np.random.default_rng([s, i, 1])``: datasets are deterministic and any prefix
of a larger one is the smaller one. Stored as one ``.npz`` without pickles (images uint8 ``[N, 32, 32, 3]``
and string arrays).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from safediffusion.mini.captions import alt_text, sample_pair
from safediffusion.mini.render import render


@dataclass
class PairDataset:
    images: np.ndarray  # uint8 [N, S, S, 3]
    captions: np.ndarray  # str [N]
    tasks: np.ndarray  # str [N]
    cues: np.ndarray  # str [N]: "explicit" | "implicit" | "safe" | ""
    cue_categories: np.ndarray  # str [N]: category named by the cue, "" if none
    markers: np.ndarray  # str [N]: category of the marker drawn, "" if none
    alt_captions: np.ndarray  # str [N]: partial, alt-text-like captions of the same images
    tints: np.ndarray  # str [N]: the background's safe tint, "" if neutral

    def __len__(self) -> int:
        return len(self.captions)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: getattr(self, k) for k in COLUMNS})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> PairDataset:
        """The dataset at ``path``; ``KeyError`` if it lacks a column (written by an older world)."""
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in COLUMNS})


COLUMNS = ("images", "captions", "tasks", "cues", "cue_categories", "markers", "alt_captions", "tints")


def _render_range(seed: int, start: int, stop: int) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    images = np.empty((stop - start, 32, 32, 3), np.uint8)
    rows = []
    for k, i in enumerate(range(start, stop)):
        caption, scene = sample_pair(np.random.default_rng([seed, i]))
        images[k] = render(scene)
        marker = scene.markers[0].category if scene.markers else ""
        alt = alt_text(np.random.default_rng([seed, i, 1]), caption)
        rows.append((caption.text, caption.composition.task, caption.cue or "", caption.category or "", marker,
                     alt, scene.tint or ""))
    return images, rows


def build_dataset(n: int, seed: int, progress: bool = True, workers: int = 1) -> PairDataset:
    """``n`` pairs of the world's joint distribution (see module doc); the same for any ``workers``."""
    chunk = 2000
    ranges = [(seed, a, min(n, a + chunk)) for a in range(0, n, chunk)]
    bar = tqdm(total=n, desc=f"rendering {n} pairs", disable=not progress, mininterval=2)
    parts = []
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for part in (pool.map if pool else map)(_render_range, *zip(*ranges)):
            parts.append(part)
            bar.update(len(part[1]))
    bar.close()
    images = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, 32, 32, 3), np.uint8)
    cols = list(zip(*[row for p in parts for row in p[1]])) or [()] * (len(COLUMNS) - 1)
    return PairDataset(images, *(np.array(c, dtype=str) for c in cols))


def load_or_build(path: str | Path, n: int, seed: int, progress: bool = True, workers: int = 1) -> PairDataset:
    """The cached dataset at ``path`` if it has ``n`` pairs, else build and cache it."""
    path = Path(path)
    if path.is_file():
        try:
            ds = PairDataset.load(path)
        except KeyError:  # an older world's cache
            ds = None
        if ds is not None and len(ds) == n:
            return ds
    ds = build_dataset(n, seed, progress, workers)
    ds.save(path)
    return ds

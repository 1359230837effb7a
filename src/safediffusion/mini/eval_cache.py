"""A cache for the evaluation of the shipped base model, so the main job spends its time on training.

The miniature evaluation is deterministic (:mod:`safediffusion.mini.evaluate`: DDIM ``eta = 0``, per-image
seeds), so the base model's result is a function of

    key = sha256(protocol JSON, every file of the shipped world's weights, the source of the modules that
                 generate and score the images)

An entry is ``<key>.json`` (the scalar metrics, :func:`safediffusion.mini.report.summary`) plus
``<key>.safetensors`` (the images of the report's before/after grids). Entries are read from the package's
shipped folder (``safediffusion/mini/weights/eval_cache``, written by ``python scripts/dev/mini/base_eval.py``)
and from the user cache (``$SAFEDIFFUSION_CACHE`` or ``~/.cache/safediffusion``, ``mini_eval/``), and written
to the latter. Only the shipped world (``model.pretrained: mini``) is cached: any other model is evaluated
every time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

import safediffusion
from safediffusion.mini import assets

SHIPPED_DIR = assets.WEIGHTS_DIR / "eval_cache"

#: Modules whose code decides the evaluation's numbers (paths relative to the package root).
SOURCES = ("mini/evaluate.py", "mini/detector.py", "mini/suites.py", "mini/render.py", "mini/world.py",
           "mini/captions.py", "mini/clip.py", "mini/tokenizer.py", "eval/generation.py", "eval/metrics.py",
           "models/bundle.py", "models/tiny.py")


def user_cache_dir() -> Path:
    root = os.environ.get("SAFEDIFFUSION_CACHE") or Path.home() / ".cache" / "safediffusion"
    return Path(root) / "mini_eval"


def evaluation_key(model: str, protocol: dict[str, Any]) -> str | None:
    """The cache key of ``model`` evaluated under ``protocol`` (JSON-able), or None if it is not cached."""
    if model != "mini":
        return None
    h = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode())
    for path in sorted(p for p in assets.WEIGHTS_DIR.rglob("*") if p.is_file() and SHIPPED_DIR not in p.parents):
        h.update(str(path.relative_to(assets.WEIGHTS_DIR)).encode())
        h.update(path.read_bytes())
    package = Path(safediffusion.__file__).parent
    for rel in SOURCES:
        h.update(rel.encode())
        h.update((package / rel).read_bytes())
    return h.hexdigest()[:32]


def load(key: str) -> tuple[dict[str, Any], str] | None:
    """``(result, source)``: the cached result (``summary`` keys + ``images``/``prompts`` of the grid) and
    where it came from ("shipped cache" or "cache"), or None."""
    for folder, source in ((SHIPPED_DIR, "shipped cache"), (user_cache_dir(), "cache")):
        meta, tensors = folder / f"{key}.json", folder / f"{key}.safetensors"
        if meta.is_file() and tensors.is_file():
            result = json.loads(meta.read_text())
            images = load_file(str(tensors))
            result["images"] = {suite: images[suite] for suite in result["prompts"]}
            return result, source
    return None


def store(key: str, result: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``result`` (as returned by :func:`safediffusion.mini.report.evaluate_models`) under ``key``;
    the JSON is written last, so a half-written entry is never read."""
    folder = Path(folder) if folder is not None else user_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    images = {suite: t.contiguous().float() for suite, t in result["images"].items()}
    tmp = folder / f"{key}.safetensors.tmp"
    save_file(images, str(tmp))
    tmp.replace(folder / f"{key}.safetensors")
    meta = {k: v for k, v in result.items() if k != "images"}
    tmp = folder / f"{key}.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(folder / f"{key}.json")
    return folder / f"{key}.json"


def get_or_compute(model: str, protocol: dict[str, Any], compute) -> tuple[dict[str, Any], str]:
    """``(result, source)``: the cached result when there is one (``source`` "shipped cache"/"cache"), else
    ``compute()`` stored in the user cache (``source`` "computed")."""
    key = evaluation_key(model, protocol)
    cached = load(key) if key is not None else None
    if cached is not None:
        return cached
    result = compute()
    if key is not None:
        try:
            store(key, result)
        except OSError:  # a read-only home is not a reason to fail a run
            pass
    return result, "computed"


__all__ = ["SHIPPED_DIR", "evaluation_key", "get_or_compute", "load", "store", "user_cache_dir"]

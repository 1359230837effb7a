"""The real-image side of COCO FID: the COCO val2014 images of a caption suite's ``coco_id``s, in one folder.

``build_coco_reference(coco_dir, out_dir, records)`` finds ``COCO_val2014_<id:012d>.jpg`` (or ``<id:012d>.jpg``)
for every distinct ``coco_id`` of ``records`` in ``coco_dir``, checks that all exist before writing anything,
and writes ``<id:012d>.png`` center-cropped to a square and resized to ``size`` px with PIL bicubic (``size=0``
copies the JPEG files unchanged). Pass the folder as ``safediffusion evaluate --suite coco --fid-reference``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.suites import PromptRecord


def coco_image_path(coco_dir: Path, coco_id: int) -> Path | None:
    for name in (f"COCO_val2014_{coco_id:012d}.jpg", f"{coco_id:012d}.jpg"):
        p = coco_dir / name
        if p.is_file():
            return p
    return None


def center_square(im: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``im``, resized to ``size`` × ``size`` (bicubic)."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def build_coco_reference(coco_dir: str | Path, out_dir: str | Path, records: Sequence[PromptRecord],
                         size: int = 512) -> list[Path]:
    """Write the reference images of ``records``; returns their paths (one per distinct ``coco_id``)."""
    coco_dir, out_dir = Path(coco_dir), Path(out_dir)
    if not coco_dir.is_dir():
        raise UserError(f"COCO image folder '{coco_dir}' does not exist", "pass the unpacked val2014/ folder")
    if size < 0:
        raise UserError(f"--size must be >= 0, got {size}", "pass e.g. 512, or 0 to copy the files unchanged")
    ids = list(dict.fromkeys(r.extra["coco_id"] for r in records if "coco_id" in r.extra))
    if not ids:
        raise UserError("the prompt file has no coco_id column", "pass the COCO caption CSV (coco_id per row)")
    sources = {i: coco_image_path(coco_dir, i) for i in ids}
    missing = [i for i, p in sources.items() if p is None]
    if missing:
        raise UserError(f"{len(missing)} of {len(ids)} COCO images are not in '{coco_dir}' (first: "
                        f"COCO_val2014_{missing[0]:012d}.jpg)", "pass the full val2014 folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, src in sources.items():
        assert src is not None
        target = out_dir / (f"{i:012d}.jpg" if size == 0 else f"{i:012d}.png")
        tmp = target.with_name(target.name + ".tmp")
        if size == 0:
            shutil.copyfile(src, tmp)
        else:
            with Image.open(src) as im:
                center_square(im.convert("RGB"), size).save(tmp, format="PNG")
        os.replace(tmp, target)
        written.append(target)
    return written

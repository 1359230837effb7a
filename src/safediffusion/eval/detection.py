"""Run detectors over a run's images and key every result by (case number, sample).

Images are taken from the generation plan (each entry knows its record and file), never from a directory
listing, so results can only be joined to the prompt that produced them. ``detections.jsonl`` holds one
line per image: ``{"case_number", "sample", "image", "<detector>": {...}, ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from safediffusion.errors import UserError
from safediffusion.eval.detectors.base import Detector
from safediffusion.eval.generation import ImageEntry

Key = tuple[int, int]


def run_detectors(detectors: Sequence[Detector], entries: Sequence[ImageEntry], root: Path,
                  out_path: Path | None = None, progress: bool = True,
                  chunk: int = 64) -> dict[Key, dict[str, dict[str, Any]]]:
    """``{(case_number, sample): {detector_name: result}}`` for every entry; optionally written as JSONL."""
    missing = [e for e in entries if not (root / e.path).is_file()]
    if missing:
        raise UserError(f"image '{root / missing[0].path}' of case {missing[0].record.case_number} is missing "
                        f"({len(missing)} missing in all)", "re-run the same command to generate it")
    results: dict[Key, dict[str, dict[str, Any]]] = {e.key: {} for e in entries}
    for det in detectors:
        bar = tqdm(total=len(entries), desc=det.name, unit="img", disable=not progress)
        for start in range(0, len(entries), chunk):
            batch = entries[start:start + chunk]
            out = det.detect([root / e.path for e in batch])
            if len(out) != len(batch):
                raise RuntimeError(f"detector {det.name} returned {len(out)} results for {len(batch)} images")
            for e, r in zip(batch, out):
                results[e.key][det.name] = r
            bar.update(len(batch))
        bar.close()
    if out_path is not None:
        with open(out_path, "w", encoding="utf-8") as f:
            for e in entries:
                line = {"case_number": e.record.case_number, "sample": e.sample, "image": e.path.as_posix()}
                line.update(results[e.key])
                f.write(json.dumps(line) + "\n")
    return results


def flags(detector: Detector, entries: Sequence[ImageEntry],
          results: dict[Key, dict[str, dict[str, Any]]]) -> list[bool]:
    """Per entry (in ``entries`` order): is the image flagged by ``detector``."""
    return [detector.flagged(results[e.key][detector.name]) for e in entries]

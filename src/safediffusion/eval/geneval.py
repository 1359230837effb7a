"""Bridge to GenEval (Ghosh et al. 2023), whose detector stack (mmdet Mask2Former) is not installed here.

1. ``safediffusion evaluate --suite geneval`` writes images in GenEval's folder layout::

       <out>/<index:05d>/metadata.jsonl     the index-th line of evaluation_metadata.jsonl
       <out>/<index:05d>/samples/<k:04d>.png

2. GenEval's ``evaluation/evaluate_images.py <out> --outfile results.jsonl --model-path <detectors>`` scores
   every image and writes one JSON line per image (``filename``, ``tag``, ``prompt``, ``correct``, ``reason``,
   ``metadata``, ``details``).
3. :func:`parse_geneval_results` turns that file into GenEval's summary, computed as in its
   ``evaluation/summary_scores.py``: per task (``tag``) the fraction of correct images, and the overall score =
   the mean of the task scores (not the mean over images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safediffusion.errors import UserError
from safediffusion.eval.suites import GENEVAL_TAGS, read_jsonl

GENEVAL_TASK_NAMES = {
    "single_object": "Single object", "two_object": "Two object", "counting": "Counting", "colors": "Colors",
    "position": "Position", "color_attr": "Color attribution",
}


def parse_geneval_results(path: str | Path) -> dict[str, Any]:
    """Per-task scores from GenEval's ``results.jsonl``.

    Returns ``{"overall", "tasks": {tag: {"score", "correct", "total"}}, "images", "prompts",
    "image_accuracy", "prompt_accuracy"}``; a prompt is correct when any of its images is.
    """
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"GenEval results file '{path}' is empty", "pass the results.jsonl of evaluate_images.py")
    tasks: dict[str, list[bool]] = {}
    prompts: dict[str, bool] = {}
    for line, row in rows:
        for key in ("tag", "correct"):
            if key not in row:
                raise UserError(f"{path}, line {line}: missing key '{key}'",
                                "pass the results.jsonl written by GenEval's evaluation/evaluate_images.py")
        if not isinstance(row["correct"], bool):
            raise UserError(f"{path}, line {line}: 'correct' must be true or false, found {row['correct']!r}",
                            "pass GenEval's unmodified results file")
        tasks.setdefault(str(row["tag"]), []).append(row["correct"])
        group = row.get("metadata")
        group = group if isinstance(group, str) else json.dumps(group, sort_keys=True) if group else row.get("prompt")
        prompts[str(group)] = prompts.get(str(group), False) or row["correct"]
    order = [t for t in GENEVAL_TAGS if t in tasks] + [t for t in tasks if t not in GENEVAL_TAGS]
    per_task = {t: {"score": sum(tasks[t]) / len(tasks[t]), "correct": sum(tasks[t]), "total": len(tasks[t])}
                for t in order}
    n_images = sum(len(v) for v in tasks.values())
    return {
        "overall": sum(v["score"] for v in per_task.values()) / len(per_task),
        "tasks": per_task,
        "images": n_images,
        "prompts": len(prompts),
        "image_accuracy": sum(sum(v) for v in tasks.values()) / n_images,
        "prompt_accuracy": sum(prompts.values()) / len(prompts),
    }


def geneval_instructions(image_dir: Path) -> str:
    """The commands that score ``image_dir`` with GenEval and feed the result back."""
    return (
        "GenEval's object detectors are not part of safediffusion. Score the images with GenEval "
        "(https://github.com/djghosh13/geneval):\n\n"
        "```bash\n"
        f"python evaluation/evaluate_images.py \"{image_dir}\" --outfile \"{image_dir}/results.jsonl\" "
        "--model-path \"<OBJECT_DETECTOR_FOLDER>\"\n"
        "```\n\n"
        "then re-run this `safediffusion evaluate` command with `--geneval-results "
        f"\"{image_dir}/results.jsonl\"` (images are not regenerated) to add the per-task scores to the report.\n"
    )

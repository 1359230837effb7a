"""What a run writes beside its checkpoints: resolved config, run info (seeds, versions, v_safe), metrics
(``metrics.jsonl``, one JSON object per epoch) and sample image grids."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from safediffusion.config import Config
from safediffusion.errors import UserError


def package_versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import peft
    import transformers

    import safediffusion

    return {"safediffusion": safediffusion.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "peft": peft.__version__, "numpy": np.__version__}


def write_run_info(output_dir: Path, cfg: Config, accelerator: Any, reward: Any) -> None:
    """``run_info.json`` (seed, processes, versions, command line, reward metadata) and ``reward/`` tensors."""
    from safetensors.torch import save_file

    reward_dir = output_dir / "reward"
    reward_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {k: v.detach().float().cpu().contiguous() for k, v in reward.artifacts().items()}
    if artifacts:
        save_file(artifacts, str(reward_dir / "reward_artifacts.safetensors"))
    info = {
        "seed": cfg.seed,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(getattr(accelerator, "distributed_type", "NO")),
        "mixed_precision": cfg.train.mixed_precision,
        "device": str(accelerator.device),
        "versions": package_versions(),
        "command": sys.argv,
        "reward": reward.metadata(),
        "reward_artifacts": {k: v.tolist() for k, v in artifacts.items()},
    }
    (output_dir / "run_info.json").write_text(json.dumps(info, indent=2, default=str))


def check_resume_compatible(output_dir: Path, cfg: Config, ignored: tuple[str, ...]) -> None:
    """Refuse to resume a run whose saved config differs from ``cfg`` (other than ``ignored`` keys)."""
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        if (output_dir / "checkpoints").exists():
            raise UserError(f"output directory '{output_dir}' has checkpoints but no config.yaml",
                            "use a new --output-dir")
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    current = cfg.to_dict()
    diffs = []
    for key, value in _flatten(current).items():
        if key == "base_dir" or any(key == i or key.startswith(i + ".") for i in ignored):
            continue
        old = _flatten(saved).get(key, "<missing>")
        if old != value:
            diffs.append(f"{key}: {old!r} -> {value!r}")
    if diffs:
        raise UserError(f"output directory '{output_dir}' holds a run with a different config "
                        f"({'; '.join(diffs[:3])})", "resume with the same config or pick a new --output-dir")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and k != "weights":
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


class MetricsWriter:
    """Appends epoch records to ``metrics.jsonl``; on resume drops records of epochs that will be redone.

    Every line is strict JSON: a non-finite number (NaN, inf) is written as ``null``, and the record gets
    ``nonfinite_values``, the number of values so replaced.
    """

    def __init__(self, path: Path, keep_epochs_below: int, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("epoch", 0) < keep_epochs_below]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record, replaced = finite_or_null(record)
        if replaced:
            record["nonfinite_values"] = replaced
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def finite_or_null(record: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``record`` with non-finite floats replaced by None, and how many were replaced."""
    out: dict[str, Any] = {}
    replaced = 0
    for k, v in record.items():
        if isinstance(v, float) and not np.isfinite(v):
            out[k] = None
            replaced += 1
        else:
            out[k] = v
    return out, replaced


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_image_grid(images: torch.Tensor, captions: list[str], scores: list[float] | None, path: Path,
                    columns: int = 4, scale: int = 4) -> None:
    """``images [N, 3, H, W]`` in [0, 1] -> a PNG grid, each tile upscaled ``scale``x with its caption."""
    n, _, h, w = images.shape
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    tw, th = w * scale, h * scale
    caption_h = 24
    tile_w = max(tw, 128)
    canvas = Image.new("RGB", (columns * tile_w, rows * (th + caption_h)), "white")
    draw = ImageDraw.Draw(canvas)
    arr = (images.nan_to_num(0.0).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        x, y = c * tile_w, r * (th + caption_h)
        tile = Image.fromarray(arr[i]).resize((tw, th), Image.NEAREST)
        canvas.paste(tile, (x + (tile_w - tw) // 2, y))
        text = captions[i][:28]
        if scores is not None:
            text = f"{scores[i]:+.3f} {captions[i][:20]}"
        draw.text((x + 2, y + th + 2), text, fill="black")
        if len(captions[i]) > 28 and scores is None:
            draw.text((x + 2, y + th + 12), captions[i][28:56], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)

"""Checkpoints under ``OUTPUT/checkpoints/checkpoint-EEEEEE`` (EEEEEE = epochs completed).

A checkpoint is accelerate's full state (model, optimizer, RNG states of every process) plus
``trainer_state.json`` (epoch, global step, stat tracker). It is written into a temporary folder and renamed
when complete, so a run killed at any moment leaves only whole checkpoints behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{epoch:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, epoch: int, state: dict[str, Any],
                    keep: int) -> Path:
    """Collective: every process calls it; the main process renames and prunes."""
    final = checkpoint_dir(output_dir, epoch)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return json.loads((path / "trainer_state.json").read_text())

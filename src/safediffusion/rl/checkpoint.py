"""Checkpoints under ``OUTPUT/checkpoints/checkpoint-EEEEEE`` (EEEEEE = epochs completed).

A checkpoint is accelerate's full state (model, optimizer, RNG states of every process) plus
``trainer_state.json`` (epoch, global step, stat tracker). It is written into a temporary folder, its files
are synced to disk, and the folder is renamed when complete, so a run killed at any moment (or a machine that
loses power) leaves only whole checkpoints behind. ``trainer_state.json`` is the completion mark: a folder
without it, or with another name (``*.tmp``, ``*.broken``), is never resumed from.

A checkpoint that fails to load anyway (a truncated or corrupt file) is moved aside as
``checkpoint-EEEEEE.broken`` (:func:`move_aside`) and the trainer resumes from the one before.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError

_NAME = re.compile(r"^checkpoint-(\d+)$")

def _dcp_errors() -> tuple[type[BaseException], ...]:
    """torch.distributed.checkpoint's error (FSDP2's sharded checkpoints), a BaseException, not an Exception."""
    try:
        from torch.distributed.checkpoint.api import CheckpointException
    except ImportError:  # a torch build without torch.distributed
        return ()
    return (CheckpointException,)


#: What loading a truncated, corrupt or incomplete checkpoint raises (safetensors, torch.load's zip reader and
#: weights-only unpickler, json, missing files or keys, torch.distributed.checkpoint). Out-of-memory errors are
#: not among them.
CHECKPOINT_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SafetensorError, RuntimeError,
                                                           EOFError, pickle.UnpicklingError, KeyError,
                                                           *_dcp_errors())


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
    if accelerator.is_main_process:
        for leftover in [tmp, *final.parent.glob("*.deleting")]:  # from a run killed while saving or pruning
            if leftover.exists():
                shutil.rmtree(leftover)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)
        if final.exists():
            _remove(final)
        tmp.rename(final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            _remove(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Load ``path`` into the accelerator's objects and return its trainer state. Raises one of
    :data:`CHECKPOINT_LOAD_ERRORS` when a file is missing, truncated or corrupt."""
    state = json.loads((path / "trainer_state.json").read_text())
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError("trainer_state.json holds no epoch")
    accelerator.load_state(str(path))
    return state


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError)


def move_aside(path: Path) -> Path:
    """Rename a broken checkpoint to ``NAME.broken`` (``NAME.broken-2``... if taken) so it is never listed."""
    target = path.with_name(path.name + ".broken")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.broken-{n}")
        n += 1
    path.rename(target)
    return target


def _remove(path: Path) -> None:
    """Rename out of the checkpoint namespace first, so a kill during the deletion leaves no half checkpoint."""
    doomed = path.with_name(path.name + ".deleting")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)

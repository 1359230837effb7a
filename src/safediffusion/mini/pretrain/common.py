"""Shared pieces of the pretraining loops: deterministic batches, LR schedule, EMA, resumable checkpoints.

Batches are i.i.d. draws ``rng([seed, step]).choice(N, B, replace=False)`` and all step noise comes from
``torch.Generator().manual_seed(seed * 1_000_003 + step)``, so a run resumed from a checkpoint at step k
continues exactly as the uninterrupted run would.

Checkpoints (``<workdir>/<stage>/``): ``<name>.safetensors`` per module, ``optimizer.pt`` (loaded with
``weights_only=True``) and ``state.json`` (``{"step": k}``), written atomically every ``every_s`` seconds.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=False)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay from ``base`` to ``0.05 * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class EMA:
    """Exponential moving average of a module's parameters: ``e <- d e + (1 - d) p``,
    ``d = min(decay, (1 + step) / (10 + step))``."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in module.parameters()], 1 - d)


class Checkpoint:
    """Resumable training state of one stage (see module doc)."""

    def __init__(self, directory: str | Path, every_s: float = 180.0) -> None:
        self.dir = Path(directory)
        self.every_s = every_s
        self._last = time.monotonic()

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    def load(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> int:
        """Restore modules (and optimizer); return the next step (0 when there is no checkpoint)."""
        if not self.exists():
            return 0
        for name, module in modules.items():
            module.load_state_dict(load_file(self.dir / f"{name}.safetensors"))
        if optimizer is not None and (self.dir / "optimizer.pt").is_file():
            optimizer.load_state_dict(torch.load(self.dir / "optimizer.pt", weights_only=True))
        return int(json.loads((self.dir / "state.json").read_text())["step"])

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None,
             extra: dict | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, module in modules.items():
            sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
            save_file(sd, self.dir / f"{name}.safetensors.tmp")
            os.replace(self.dir / f"{name}.safetensors.tmp", self.dir / f"{name}.safetensors")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), self.dir / "optimizer.pt.tmp")
            os.replace(self.dir / "optimizer.pt.tmp", self.dir / "optimizer.pt")
        state = {"step": step, **(extra or {})}
        (self.dir / "state.json.tmp").write_text(json.dumps(state))
        os.replace(self.dir / "state.json.tmp", self.dir / "state.json")
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def mark_done(self, info: dict) -> None:
        (self.dir / "done.json").write_text(json.dumps(info, indent=2))

    def is_done(self) -> bool:
        return (self.dir / "done.json").is_file()

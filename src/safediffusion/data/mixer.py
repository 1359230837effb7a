"""Training prompt sources: a benign and an unsafe prompt set mixed at a configured ratio.

Each epoch's prompts are a pure function of ``(seed, epoch, rank)``: every prompt is drawn from the unsafe
set with probability ``unsafe_ratio`` (else the benign set), then uniformly from that set. No state to save,
so a resumed run sees exactly the prompts an uninterrupted run would, and each process sees its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from safediffusion.config import DataConfig
from safediffusion.data.corpora import NAMED_CORPORA, corpus_path
from safediffusion.data.prompts import load_prompts
from safediffusion.errors import UserError
from safediffusion.registry import PROMPT_SOURCES


@dataclass
class PromptMixer:
    benign: list[str]
    unsafe: list[str]
    unsafe_ratio: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.benign and not self.unsafe:
            raise UserError("no training prompts", "set data.prompts and/or data.unsafe_prompts")
        if not self.unsafe:
            self.unsafe_ratio = 0.0
        elif not self.benign:
            self.unsafe_ratio = 1.0

    def epoch_prompts(self, epoch: int, n: int, rank: int = 0) -> list[tuple[str, str]]:
        """``n`` ``(prompt, set_name)`` pairs for ``epoch`` on process ``rank``; set_name is benign|unsafe."""
        rng = np.random.default_rng([self.seed, epoch, rank])
        out = []
        for _ in range(n):
            use_unsafe = rng.random() < self.unsafe_ratio
            pool, name = (self.unsafe, "unsafe") if use_unsafe else (self.benign, "benign")
            out.append((pool[int(rng.integers(len(pool)))], name))
        return out


def _tiny_prompts(spec: str) -> list[str]:
    from safediffusion.data.builtin import TINY_BENIGN, TINY_UNSAFE

    if spec not in ("tiny:benign", "tiny:unsafe"):
        raise UserError(f"unknown tiny prompt set '{spec}'", "use tiny:benign or tiny:unsafe")
    return list(TINY_UNSAFE if spec == "tiny:unsafe" else TINY_BENIGN)


PROMPT_SOURCES.register("tiny", _tiny_prompts)


def _load_source(spec: str, column: str, resolve: Callable[[str], str], max_prompts: int | None,
                 kind: str) -> list[str]:
    prefix = spec.split(":", 1)[0] if ":" in spec else None
    if prefix is not None and prefix in PROMPT_SOURCES:
        prompts = PROMPT_SOURCES.get(prefix)(spec)
    elif spec in NAMED_CORPORA:
        prompts = load_prompts(corpus_path(spec), column=column, what=f"{kind} prompt corpus '{spec}'")
    else:
        prompts = load_prompts(resolve(spec), column=column, what=f"{kind} prompt file")
    return prompts[:max_prompts] if max_prompts else prompts


def build_prompt_mixer(cfg: DataConfig, seed: int, resolve: Callable[[str], str] = lambda p: p) -> PromptMixer:
    benign = _load_source(cfg.prompts, cfg.prompt_column, resolve, cfg.max_prompts, "benign") if cfg.prompts else []
    unsafe = (_load_source(cfg.unsafe_prompts, cfg.unsafe_column, resolve, cfg.max_prompts, "unsafe")
              if cfg.unsafe_prompts else [])
    return PromptMixer(benign=benign, unsafe=unsafe, unsafe_ratio=cfg.unsafe_ratio, seed=seed)

"""The miniature world's registry entries (entry point ``safediffusion.plugins: mini``).

Registers the model ``mini``, the reward encoders ``mini`` (generator CLIP) and ``mini-reward`` (reward CLIP),
the oracle reward ``mini-detector``, the prompt sets ``mini:benign`` / ``mini:unsafe[:<category>]``, the
rollout metric ``marker_rate``, the post-training report of the suites ``mini-i2p`` and ``mini-geneval``, and
the command ``safediffusion table``. Nothing heavy is imported until an entry is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safediffusion.registry import (
    COMMANDS,
    ENCODERS,
    MODELS,
    PROMPT_SOURCES,
    REWARDS,
    ROLLOUT_METRICS,
    TRAINING_REPORTS,
    CommandEntry,
    ModelEntry,
    RewardContext,
    RewardEntry,
)


def _model_dir() -> str:
    from safediffusion.mini.assets import mini_model_dir

    return str(mini_model_dir())


def _encoder(name: str) -> Any:
    def load(device: Any) -> Any:
        from safediffusion.mini.assets import mini_clip_dir, mini_reward_clip_dir
        from safediffusion.rewards.encoders import HFClipEncoder

        directory = mini_clip_dir() if name == "mini" else mini_reward_clip_dir()
        encoder = HFClipEncoder.from_pretrained(str(directory), device=device)
        encoder.name = name
        return encoder

    return load


_ENCODER_LOADERS = {name: _encoder(name) for name in ("mini", "mini-reward")}


def _detector_reward(ctx: RewardContext) -> Any:
    from safediffusion.mini.oracle import DetectorReward

    return DetectorReward()


def _prompts(spec: str) -> list[str]:
    from safediffusion.errors import UserError
    from safediffusion.mini.suites import mini_prompts

    _, name, *category = spec.split(":")
    if name not in ("benign", "unsafe") or len(category) > 1 or (category and name != "unsafe"):
        raise UserError(f"unknown miniature prompt set '{spec}'",
                        "use mini:benign, mini:unsafe or mini:unsafe:<category>")
    return mini_prompts("train", name, category=category[0] if category else None)


def _marker_flags(images: Any) -> Any:
    from safediffusion.mini.oracle import marker_flags

    return marker_flags(images)


def _write_report(cfg: Any, output_dir: str | Path, command: str) -> Path:
    from safediffusion.mini.report import write_training_report

    return write_training_report(cfg, output_dir, command=command)


def _table_args(parser: argparse.ArgumentParser) -> None:
    from safediffusion.mini.table import add_table_args

    add_table_args(parser)


def _run_table(args: argparse.Namespace) -> int:
    from safediffusion.mini.table import run_table

    return run_table(args)


def register() -> None:
    MODELS.register("mini", ModelEntry(folder=_model_dir))
    for name, load in _ENCODER_LOADERS.items():
        ENCODERS.register(name, load)
    REWARDS.register("mini-detector", RewardEntry(_detector_reward, needs_encoder=False))
    PROMPT_SOURCES.register("mini", _prompts)
    ROLLOUT_METRICS.register("marker_rate", _marker_flags)
    for suite in ("mini-i2p", "mini-geneval"):
        TRAINING_REPORTS.register(suite, _write_report)
    COMMANDS.register("table", CommandEntry("the miniature paper table (several GRPO runs + evaluation)",
                                            _table_args, _run_table))

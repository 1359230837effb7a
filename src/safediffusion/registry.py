"""Registries: the names a config or a command line may use, and what each name builds.

The core registers its own entries where they are used (``steering``/``clip``/``negative`` in
:mod:`safediffusion.rewards.build`, the ``tiny`` model in :mod:`safediffusion.models`, the ``tiny`` encoder in
:mod:`safediffusion.rewards.loading`, ``tiny:`` prompts in :mod:`safediffusion.data.mixer`). Other packages add theirs from a plugin: a function listed under the entry-point group
``safediffusion.plugins`` that is called once, the first time any registry is asked for a name. The miniature
world is such a plugin (``safediffusion.mini.plugin:register``); the core never imports it, so a user's own
world, reward or suite plugs in the same way::

    # pyproject.toml of your package
    [project.entry-points."safediffusion.plugins"]
    mine = "my_package.safediffusion_plugin:register"

    # my_package/safediffusion_plugin.py
    from safediffusion import registry

    def register() -> None:
        registry.REWARDS.register("my-reward", RewardEntry(build=lambda ctx: MyReward(ctx.encoder)))

A plugin that fails to import (a missing optional dependency) is skipped with a warning; its names are then
unknown and asking for one gives the usual "unknown ... ; choose one of ..." error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from safediffusion.errors import UserError

if TYPE_CHECKING:  # only for annotations; importing these here would make a cycle
    import torch

    from safediffusion.config import Config, RewardConfig
    from safediffusion.rewards.base import Reward
    from safediffusion.rewards.encoders import ClipEncoder

PLUGIN_GROUP = "safediffusion.plugins"
T = TypeVar("T")

_plugins_loaded = False


def load_plugins() -> None:
    """Call every ``safediffusion.plugins`` entry point, once (idempotent; a plugin that fails to import warns
    and is skipped). The core's own entries are registered by the modules that use them, on import."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()()
        except ImportError as e:
            warnings.warn(f"safediffusion plugin '{ep.name}' ({ep.value}) was not loaded: {e}", stacklevel=2)


class Registry(Generic[T]):
    """A name -> entry table of one ``kind`` (for error messages). Plugins load on the first lookup."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; a second entry for a taken name is refused unless ``replace``."""
        if name in self._entries and not replace and self._entries[name] != entry:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of ``name``, or a :class:`UserError` listing the known names."""
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'", f"choose one of: {', '.join(self.names()) or '(none)'}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> Iterator[tuple[str, T]]:
        load_plugins()
        return iter(sorted(self._entries.items()))


# ------------------------------------------------------------------------------------------------ entries


@dataclass(frozen=True)
class RewardContext:
    """What a reward factory may use: the reward config, the shared encoder (``None`` when no component
    needs one), the resolved anchors and ``v_safe`` (``None`` unless a ``steering`` component is present)."""

    cfg: RewardConfig
    encoder: ClipEncoder | None
    safe_anchors: list[str]
    unsafe_anchors: list[str]
    v_safe: torch.Tensor | None


@dataclass(frozen=True)
class RewardEntry:
    """``build(ctx) -> Reward``; ``needs_encoder``: whether it scores with the configured CLIP encoder."""

    build: Callable[[RewardContext], Reward]
    needs_encoder: bool = True


@dataclass(frozen=True)
class ModelEntry:
    """A ``model.pretrained`` alias: either ``folder() -> path`` of a diffusers folder on disk (loaded like any
    folder, so LoRA runs on it record its weights), or ``build(seed) -> ModelBundle`` made in memory."""

    folder: Callable[[], str] | None = None
    build: Callable[[int], Any] | None = None


@dataclass(frozen=True)
class CommandEntry:
    """A ``safediffusion <name>`` subcommand: ``add_args(parser)`` then ``run(args) -> exit code``."""

    help: str
    add_args: Callable[[Any], None]
    run: Callable[[Any], int]


#: ``model.pretrained`` / ``--model`` aliases (any other value is a folder or a hub id).
MODELS: Registry[ModelEntry] = Registry("model")
#: ``reward.encoder`` names: name -> ``load(device) -> ClipEncoder``.
ENCODERS: Registry[Callable[[Any], ClipEncoder]] = Registry("reward encoder")
#: ``reward.name`` (and the components of ``weighted``).
REWARDS: Registry[RewardEntry] = Registry("reward")
#: prompt sources ``<prefix>:<rest>`` in ``data.prompts`` / ``data.unsafe_prompts``: prefix -> ``load(spec)``.
PROMPT_SOURCES: Registry[Callable[[str], list[str]]] = Registry("prompt source")
#: ``logging.rollout_metrics``: name -> ``flags(images [B, 3, H, W] in [0, 1]) -> bool [B]``, logged per epoch as
#: ``<name>``, ``<name>/benign``, ``<name>/unsafe`` (the fraction of flagged rollouts).
ROLLOUT_METRICS: Registry[Callable[[Any], Any]] = Registry("rollout metric")
#: ``eval.suites`` of the report after ``safediffusion train``: suite name -> ``write(cfg, run_dir, command) ->
#: report path``. All suites of one config must share one writer (it evaluates them together).
TRAINING_REPORTS: Registry[Callable[[Config, Any, str], Any]] = Registry("training evaluation suite")
#: ``safediffusion evaluate --suite`` prompt suites: name -> :class:`safediffusion.eval.suites.Suite`.
EVAL_SUITES: Registry[Any] = Registry("suite")
#: ``safediffusion evaluate --detectors``: name -> ``build(opts, models) -> Detector``
#: (:func:`safediffusion.eval.evaluate.build_detectors`).
DETECTORS: Registry[Callable[[Any, Any], Any]] = Registry("detector")
#: ``safediffusion evaluate --protocol``: name -> :class:`safediffusion.eval.protocols.Protocol`.
EVAL_PROTOCOLS: Registry[Any] = Registry("evaluation protocol")
#: extra ``safediffusion`` subcommands.
COMMANDS: Registry[CommandEntry] = Registry("command")

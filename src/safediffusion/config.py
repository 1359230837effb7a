"""Typed run configuration: one dataclass per concern, loaded from YAML, with ``key=value`` overrides.

    cfg = load_config("configs/tiny.yaml", ["train.epochs=3", "reward.alpha=0.7"])

Every field has a default, so a YAML file only lists what it changes. Unknown keys, wrong types and
out-of-range values raise :class:`~safediffusion.errors.UserError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from safediffusion.errors import UserError, first_line

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "mini"


def resolve_config_path(name: str) -> Path:
    """A YAML path as given, or the name of a shipped config (``mini``, ``tiny``, ``sd15-paper``, ...)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"config '{name}' is neither a file nor a shipped config", f"shipped configs: {names}")

# The paper's "compact" anchor set (5 safe + 3 unsafe phrases).
PAPER_SAFE_ANCHORS = [
    "a safe",
    "a non-violent, non-sexual image",
    "a wholesome, PG-rated photo",
    "an image with no nudity, no gore, no weapons",
    "appropriate image",
]
PAPER_UNSAFE_ANCHORS = [
    "explicit sexual content and nudity",
    "pornographic material",
    "an image with naked people engaged in sexual acts",
]


@dataclass
class ModelConfig:
    """The policy model.

    ``pretrained``: ``"mini"`` (the miniature world's shipped model), ``"tiny"`` (random tiny SD built in
    memory, for tests), a local diffusers directory, or a hub id (needs network or the local HF cache).
    """

    pretrained: str = "mini"
    revision: str | None = None
    tiny_seed: int = 0
    use_lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        _check(self.lora_rank >= 1, "model.lora_rank", "must be >= 1")
        _check(self.lora_alpha >= 1, "model.lora_alpha", "must be >= 1")
        _check(0.0 <= self.lora_dropout < 1.0, "model.lora_dropout", "must be in [0, 1)")
        _check(bool(self.pretrained), "model.pretrained", "must name 'mini', 'tiny', a directory or a hub id")


@dataclass
class SamplingConfig:
    """DDIM rollouts. ``eta > 0`` makes every step a Gaussian transition with a log-probability."""

    num_steps: int = 50
    eta: float = 1.0
    guidance_scale: float = 5.0
    resolution: int | None = None
    shared_noise_per_group: bool = False
    negative_prompt: str = ""

    def validate(self) -> None:
        _check(self.num_steps >= 1, "sampling.num_steps", "must be >= 1")
        _check(self.eta >= 0, "sampling.eta", "must be >= 0")
        _check(self.guidance_scale >= 1.0, "sampling.guidance_scale", "must be >= 1 (1 disables CFG)")
        _check(self.resolution is None or self.resolution >= 8, "sampling.resolution", "must be >= 8 or null")


@dataclass
class RewardConfig:
    """The reward. ``name``: ``steering`` (SafeDiffusion-R1), ``clip`` (plain alignment, alpha 0),
    ``negative`` (-cos to the unsafe anchors), a reward a plugin registered (the miniature world's
    ``mini-detector``: ``1 - 1[marker]`` by its exact detector, no CLIP), or ``weighted`` (a sum of the others,
    see ``weights``); the names live in :data:`safediffusion.registry.REWARDS`.

    ``encoder``: a name in :data:`safediffusion.registry.ENCODERS` (``"tiny"``: random tiny CLIP; the miniature
    world's ``"mini-reward"``, its reward CLIP, and ``"mini"``, its generator's CLIP), ``"hpsv2.1"`` / ``"hpsv2"`` (open_clip ViT-H-14 with the HPS checkpoint,
    downloaded from the Hub at a pinned revision and hash-checked; ``open_clip_finetuned`` replaces the
    download with a local file), a local directory or a hub id of a transformers CLIPModel; with
    ``encoder_type: open_clip`` (and any other ``encoder``) an open_clip architecture ``open_clip_arch`` whose
    weights come from ``open_clip_pretrained`` (+ an optional fine-tuned state dict ``open_clip_finetuned``).
    """

    name: str = "steering"
    encoder: str = "mini-reward"
    encoder_type: Literal["hf", "open_clip"] = "hf"
    open_clip_arch: str = "ViT-H-14"
    open_clip_pretrained: str | None = None
    open_clip_finetuned: str | None = None
    alpha: float = 0.5
    mode: Literal["all", "unsafe_only", "projection"] = "all"
    safe_anchors: list[str] = field(default_factory=lambda: list(PAPER_SAFE_ANCHORS))
    unsafe_anchors: list[str] = field(default_factory=lambda: list(PAPER_UNSAFE_ANCHORS))
    safe_anchors_file: str | None = None
    unsafe_anchors_file: str | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        """Checks values; the reward names are checked against the registry by ``build_reward``."""
        _check(self.alpha >= 0, "reward.alpha", "must be >= 0 (0 is plain CLIP alignment)")
        _check(self.name != "weighted" or bool(self.weights), "reward.weights",
               "must name at least one reward when name=weighted")

    @property
    def component_names(self) -> list[str]:
        """The rewards this config sums: ``weights``' keys for ``weighted``, else ``[name]``."""
        return list(self.weights) if self.name == "weighted" else [self.name]


@dataclass
class TrainConfig:
    """GRPO optimisation. Per process and epoch: ``prompts_per_epoch`` prompts x ``group_size`` rollouts.

    ``max_nonfinite_epochs``: an update whose reward, advantage, loss or gradient is not finite is skipped
    (with a warning, counted in ``metrics.jsonl``); this many such epochs in a row stop the run (exit code 3)
    without writing ``final/``.

    Which transitions are trained: ``W = round(num_steps * timestep_window)`` first steps are eligible and
    ``K = int(W * timestep_fraction)`` of them are trained per sample. ``timestep_selection``: ``random`` trains a
    random ``K`` of the ``W`` (a new draw per sample and epoch); ``first`` trains the first ``K`` steps, in an order
    shuffled per sample (the paper's code: the first 49 of 50, never the last).

    ``adv_std``: the group standard deviation in ``A = (r - mean) / (std + adv_eps)``: ``population`` (divide by
    G) or ``unbiased`` (divide by G - 1, ``torch.std``'s default, the paper's code with ``adv_eps = 1e-8``).
    ``shuffle_samples``: shuffle the samples before cutting them into minibatches of ``train_batch_size``; off,
    the minibatches are consecutive samples in rollout order (the paper's code).
    """

    epochs: int = 300
    prompts_per_epoch: int = 4
    group_size: int = 16
    sample_batch_size: int = 16
    train_batch_size: int = 8
    timestep_fraction: float = 0.98
    timestep_window: float = 1.0
    timestep_selection: Literal["random", "first"] = "random"
    deterministic_after_window: bool = False
    inner_epochs: int = 1
    gradient_accumulation_steps: int = 1
    clip_range: float = 1e-4
    adv_clip_max: float = 2.5
    adv_eps: float = 1e-4
    adv_std: Literal["population", "unbiased"] = "population"
    shuffle_samples: bool = True
    per_prompt_stat_tracking: bool = False
    stat_tracking_buffer: int = 32
    stat_tracking_min_count: int = 16
    kl_beta: float = 0.0
    learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cfg_in_training: bool = True
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    max_nonfinite_epochs: int = 3
    algorithm: Literal["grpo"] = "grpo"

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.prompts_per_epoch >= 1, "train.prompts_per_epoch", "must be >= 1")
        _check(self.group_size >= 2, "train.group_size",
               "must be >= 2 (GRPO normalises rewards within a group of samples of one prompt)")
        _check(self.sample_batch_size >= 1, "train.sample_batch_size", "must be >= 1")
        _check(self.train_batch_size >= 1, "train.train_batch_size", "must be >= 1")
        _check(0 < self.timestep_fraction <= 1, "train.timestep_fraction", "must be in (0, 1]")
        _check(0 < self.timestep_window <= 1, "train.timestep_window", "must be in (0, 1] (1 trains on every step)")
        _check(self.inner_epochs >= 1, "train.inner_epochs", "must be >= 1")
        _check(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be >= 1")
        _check(self.clip_range > 0, "train.clip_range", "must be > 0")
        _check(self.adv_clip_max > 0, "train.adv_clip_max", "must be > 0")
        _check(self.adv_eps > 0, "train.adv_eps", "must be > 0 (a group of equal rewards has std 0)")
        _check(self.kl_beta >= 0, "train.kl_beta", "must be >= 0")
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _check(self.max_grad_norm > 0, "train.max_grad_norm", "must be > 0")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        _check(self.max_nonfinite_epochs >= 1, "train.max_nonfinite_epochs", "must be >= 1")


@dataclass
class DataConfig:
    """Training prompts. Files: ``.txt`` (one per line), ``.csv`` (``*_column``), ``.jsonl`` (``*_column`` key).

    With both ``prompts`` (benign) and ``unsafe_prompts`` set, each epoch draws ``unsafe_ratio`` of its
    prompts from the unsafe set. ``<source>:<name>`` names a registered prompt set
    (:data:`safediffusion.registry.PROMPT_SOURCES`: ``tiny:benign``, ``tiny:unsafe``; the miniature world's
    ``mini:benign`` / ``mini:unsafe`` / ``mini:unsafe:<category>``); ``coprov2`` the paper's training captions,
    downloaded and cached on first use (:mod:`safediffusion.data.corpora`).
    """

    prompts: str | None = "mini:benign"
    prompt_column: str = "prompt"
    unsafe_prompts: str | None = "mini:unsafe"
    unsafe_column: str = "prompt"
    unsafe_ratio: float = 0.5
    max_prompts: int | None = None

    def validate(self) -> None:
        _check(self.prompts is not None or self.unsafe_prompts is not None, "data.prompts",
               "must name a prompt file (or set data.unsafe_prompts)")
        _check(0.0 <= self.unsafe_ratio <= 1.0, "data.unsafe_ratio", "must be in [0, 1]")
        _check(self.max_prompts is None or self.max_prompts >= 1, "data.max_prompts", "must be >= 1 or null")


@dataclass
class LoggingConfig:
    """Logs of a run. ``rollout_metrics``: names in :data:`safediffusion.registry.ROLLOUT_METRICS`, each a
    per-image flag whose rate over each epoch's rollouts is logged as ``<name>``, ``<name>/benign`` and
    ``<name>/unsafe`` (the miniature world registers ``marker_rate``: rollouts with an unsafe marker, judged by its
    exact detector; meaningful for its model only)."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "safediffusion"
    image_grid_every: int = 10
    image_grid_size: int = 8
    progress: bool = True
    rollout_metrics: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _check(self.image_grid_every >= 1, "logging.image_grid_every", "must be >= 1")


@dataclass
class EvalConfig:
    """Evaluation run by ``safediffusion train`` after training (the miniature world's report)."""

    enabled: bool = False
    suites: list[str] = field(default_factory=lambda: ["mini-i2p", "mini-geneval"])
    max_prompts: int | None = None
    num_steps: int | None = None
    seed: int = 0  # the suites' prompts and image seeds; fixed, so runs with other training seeds compare

    def validate(self) -> None:
        _check(self.max_prompts is None or self.max_prompts >= 1, "eval.max_prompts", "must be >= 1 or null")


@dataclass
class Config:
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Directory that relative paths in the config are resolved against (the YAML file's folder).
    base_dir: str | None = None

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate()
        if self.train.algorithm == "grpo":
            _check(self.sampling.eta > 0, "sampling.eta",
                   "must be > 0 for GRPO: with eta=0 DDIM is deterministic and a step has no log-probability "
                   "(use e.g. sampling.eta=1.0)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolve_path(self, path: str) -> str:
        """A path as given if it exists, else relative to the config file's folder (if that exists)."""
        if Path(path).is_absolute() or Path(path).exists():
            return path
        if self.base_dir is not None and (Path(self.base_dir) / path).exists():
            return str(Path(self.base_dir) / path)
        return path


def _check(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise UserError(f"invalid config value for '{key}': {rule}")


# ----------------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts with type checking.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise UserError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = UserError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}",
                    f"fix the value in the YAML file or the '{key}=...' override")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError:
                continue
        raise bad
    if origin is Literal:
        if value in args:
            return value
        raise bad
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key)
    raise bad


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else k
        if k not in names:
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise UserError(f"unknown config key '{full}'", f"valid keys {where}: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise UserError(f"config override '{dotted}' goes through '{p}', which is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise UserError(f"cannot parse override '{text}'", "write overrides as key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"cannot parse override '{text}': empty key", "write overrides as key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key, value


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key '{key}' (line {line})")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML config file, with ``inherit: other.yaml`` (a path relative to the file) resolved:
    the inherited file's mapping, recursively merged under this one's."""
    p = Path(path)
    if not p.is_file():
        where = f" (inherited by '{_chain[-1]}')" if _chain else ""
        raise UserError(f"config file '{path}'{where} does not exist", "pass an existing YAML file to --config")
    if p.resolve() in _chain:
        raise UserError(f"config file '{path}' inherits itself", "remove the cycle of 'inherit:' keys")
    try:
        loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as e:
        raise UserError(f"config file '{path}' sets '{e.key}' twice (the second time on line {e.line})",
                        "keep one of the two; YAML would silently use the last") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file '{path}' is not valid YAML ({first_line(e, 1000)})",
                        "fix the file's syntax") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(f"config file '{path}' must hold a mapping of sections", "see configs/tiny.yaml")
    parent = loaded.pop("inherit", None)
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise UserError(f"config file '{path}': 'inherit' must be a file name", "e.g. inherit: mini.yaml")
    return _deep_merge(read_config_file(p.parent / parent, (*_chain, p.resolve())), loaded)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, validate.

    A file may start from another with ``inherit: other.yaml`` (:func:`read_config_file`); a key given twice
    in one mapping is an error.
    """
    data: dict[str, Any] = {}
    base_dir = None
    if path is not None:
        data = read_config_file(path)
        base_dir = str(Path(path).resolve().parent)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    cfg = config_from_dict(data)
    if cfg.base_dir is None:
        cfg.base_dir = base_dir
    cfg.validate()
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

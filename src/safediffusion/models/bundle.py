"""One model bundle for real SD pipelines, tiny random test models and the miniature world.

A bundle holds the parts of a diffusers Stable Diffusion pipeline: ``unet``, ``scheduler`` (DDIM),
``text_encoder``, ``tokenizer`` and an optional ``vae``. Pixel-space models have ``vae=None``: the UNet
then denoises images in [-1, 1] directly.

Shapes: ``encode_prompts(prompts) -> [B, L, D]``; ``decode(latents [B, C, h, w]) -> images [B, 3, H, W]``
in [0, 1], with ``H = h * vae_scale_factor`` (1 without a VAE).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from safediffusion.errors import LOAD_ERRORS, UserError, first_line


@dataclass
class ModelBundle:
    unet: UNet2DConditionModel
    scheduler: DDIMScheduler
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL | None = None
    source: str = ""

    # ------------------------------------------------------------------ geometry
    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def image_size(self) -> int:
        return self.latent_size * self.vae_scale_factor

    def latent_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        """``(C, h, w)`` of the UNet's input for an image of ``resolution`` pixels (model default if None)."""
        if resolution is None:
            h = self.latent_size
        else:
            if resolution % self.vae_scale_factor:
                raise UserError(f"resolution {resolution} is not a multiple of the VAE factor "
                                f"{self.vae_scale_factor}", "choose a multiple, e.g. "
                                f"{self.image_size}")
            h = resolution // self.vae_scale_factor
        return (self.latent_channels, h, h)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ------------------------------------------------------------------ conversions
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states ``[B, L, D]`` used as UNet cross-attention context."""
        ids = self.tokenize(prompts).to(self.text_encoder.device)
        return self.text_encoder(ids)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, h, w]`` -> images ``[B, 3, H, W]`` in [0, 1] (differentiable)."""
        if self.vae is None:
            images = latents
        else:
            scaling = self.vae.config.scaling_factor
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0
            images = self.vae.decode((latents / scaling + shift).to(self.vae.dtype)).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> latents (the VAE posterior mean scaled; identity in pixel space)."""
        x = images * 2 - 1
        if self.vae is None:
            return x
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (dist.mean - shift) * self.vae.config.scaling_factor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ModelBundle:
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.to(device)
                if dtype is not None:
                    module.to(dtype)
        return self

    def freeze_except_unet(self) -> None:
        self.text_encoder.requires_grad_(False)
        if self.vae is not None:
            self.vae.requires_grad_(False)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | Path, unet: UNet2DConditionModel | None = None) -> None:
        """Write a diffusers directory that ``StableDiffusionPipeline.from_pretrained`` loads.

        Pixel-space bundles (no VAE) are written in the same layout without ``vae/``; they load with
        :func:`load_bundle` (diffusers' SD pipeline requires a VAE).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (unet or self.unet).save_pretrained(d / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(d / "scheduler")
        self.text_encoder.save_pretrained(d / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(d / "tokenizer")
        if self.vae is not None:
            self.vae.save_pretrained(d / "vae", safe_serialization=True)
        import diffusers
        import transformers

        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"] if self.vae is not None else [None, None],
        }
        (d / "model_index.json").write_text(json.dumps(index, indent=2))
        (d / "safediffusion.json").write_text(json.dumps({
            "pixel_space": self.vae is None,
            "transformers_version": transformers.__version__,
        }, indent=2))


# ---------------------------------------------------------------------- loading


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_fetch_command(name: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> str:
    """The ``hf download`` command that puts what :func:`resolve_model_dir` needs into the HF cache."""
    parts = ["hf", "download", name]
    if revision:
        parts += ["--revision", revision]
    for pattern in allow_patterns or []:
        parts += ["--include", pattern]
    return shlex.join(parts)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_dir(name: str, revision: str | None = None, what: str = "model",
                      allow_patterns: list[str] | None = None) -> Path:
    """A local directory for ``name``: the directory itself, or the HF cache / a download for a hub id.

    Raises a one-line UserError when ``name`` is neither a directory nor an obtainable hub id; never blocks
    for minutes on retries when the hub is unreachable.
    """
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise UserError(f"{what} path '{name}' is a file, not a directory", "pass a diffusers/transformers folder")
    if not _looks_like_hub_id(name):
        raise UserError(f"{what} '{name}' does not exist", "pass an existing local directory or a hub id "
                        "such as CompVis/stable-diffusion-v1-4")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True,
                                      allow_patterns=allow_patterns))
    except Exception:
        pass
    fetch = f"run `{hub_fetch_command(name, revision, allow_patterns)}` where the Hub is reachable"
    if _hub_offline():
        raise UserError(f"{what} '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                        f"{fetch}, or pass a local directory")
    if not _hub_reachable():
        raise UserError(f"{what} '{name}' is not cached and the Hugging Face hub cannot be reached",
                        f"connect to the network ({fetch}), or pass a local directory")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=allow_patterns))
    except Exception as e:  # noqa: BLE001 - we turn any hub failure into one clear line
        raise UserError(f"could not download {what} '{name}' ({type(e).__name__})",
                        "check the hub id, your token (hf auth login) and the network") from None


def load_tokenizer(directory: Path) -> CLIPTokenizer:
    tok = CLIPTokenizer.from_pretrained(directory)
    if len(tok) <= 2:  # transformers returns an empty tokenizer for a missing vocabulary when offline
        raise UserError(f"tokenizer in '{directory}' has no vocabulary", "the folder must hold vocab.json and "
                        "merges.txt")
    return tok


def _resolve_alias(name: str) -> str:
    """A registered folder alias (the miniature world's ``"mini"``) -> its folder; any other name unchanged."""
    from safediffusion.registry import MODELS

    if name in MODELS and MODELS.get(name).folder is not None:
        return str(MODELS.get(name).folder())
    return name


def _local_unet_weights(base: str) -> Path | None:
    """The UNet weight file of a local base model (``"mini"`` or a folder), or ``None`` (hub ids, tiny)."""
    base = _resolve_alias(base)
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        path = Path(base) / "unet" / name
        if path.is_file():
            return path
    return None


def weights_fingerprint(path: str | Path, chunks: int = 64, chunk_size: int = 1 << 16) -> str:
    """SHA-256 over a file's size and ``chunks`` evenly spaced ``chunk_size``-byte slices (the whole file when
    it is smaller): cheap on multi-GB checkpoints, and any retraining changes it."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= chunks * chunk_size:
            h.update(f.read())
        else:
            for k in range(chunks):
                f.seek(k * (size - chunk_size) // (chunks - 1))
                h.update(f.read(chunk_size))
    return h.hexdigest()


def lora_metadata(base: str) -> dict[str, str]:
    """What a LoRA output folder records of its base: the name and, for local bases, a weights fingerprint."""
    meta = {"lora_of": base}
    weights = _local_unet_weights(base)
    if weights is not None:
        meta["base_unet_fingerprint"] = weights_fingerprint(weights)
    return meta


def _lora_base(name: str) -> str | None:
    """The base model of a LoRA output folder written by the trainer (``safediffusion.json: lora_of``).

    Warns when the base's UNet weights differ from the ones the adapter was trained on (for example a
    retrained miniature world): the adapter still loads, but it was not trained for these weights.
    """
    meta_file = Path(name) / "safediffusion.json"
    if not (meta_file.is_file() and (Path(name) / "pytorch_lora_weights.safetensors").is_file()):
        return None
    meta = json.loads(meta_file.read_text())
    base, recorded = meta.get("lora_of"), meta.get("base_unet_fingerprint")
    if base is not None and recorded is not None:
        weights = _local_unet_weights(base)
        if weights is not None and weights_fingerprint(weights) != recorded:
            import warnings

            warnings.warn(f"the LoRA adapter in '{name}' was trained on other weights of its base '{base}' "
                          f"({weights} changed since); its results will differ from the run's report",
                          UserWarning, stacklevel=3)
    return base


def load_bundle(name: str, revision: str | None = None, tiny_seed: int = 0) -> ModelBundle:
    """Load a bundle: a registered name (:data:`safediffusion.registry.MODELS`: ``"tiny"``, random and in
    memory, seeded by ``tiny_seed``; the miniature world's ``"mini"``), a folder or a hub id.

    A LoRA folder written by the trainer (``OUTPUT/final`` with ``model.use_lora``) loads as its base model
    with the adapter attached.
    """
    from safediffusion.registry import MODELS

    if name in MODELS and MODELS.get(name).build is not None:
        return MODELS.get(name).build(tiny_seed)
    name = _resolve_alias(name)
    lora = _lora_base(name)
    if lora is not None:
        bundle = load_bundle(lora, revision=None, tiny_seed=tiny_seed)
        bundle.unet.load_lora_adapter(str(Path(name) / "pytorch_lora_weights.safetensors"), prefix="unet")
        bundle.source = name
        return bundle
    patterns = ["model_index.json", "unet/*", "scheduler/*", "text_encoder/*", "tokenizer/*", "vae/*",
                "safediffusion.json"]
    root = resolve_model_dir(name, revision, what="model", allow_patterns=patterns)
    for part in ("unet", "scheduler", "text_encoder", "tokenizer"):
        if not (root / part).is_dir():
            raise UserError(f"model folder '{root}' has no '{part}/' subfolder",
                            "pass a diffusers Stable Diffusion folder (unet/, scheduler/, text_encoder/, "
                            "tokenizer/, vae/)")
    try:
        unet = UNet2DConditionModel.from_pretrained(root / "unet")
        scheduler = DDIMScheduler.from_pretrained(root / "scheduler")
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder")
        tokenizer = load_tokenizer(root / "tokenizer")
        vae = AutoencoderKL.from_pretrained(root / "vae") if (root / "vae").is_dir() else None
    except LOAD_ERRORS as e:
        raise UserError(f"could not load model from '{root}': {first_line(e)}",
                        "check that the folder is a complete diffusers pipeline") from None
    return ModelBundle(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                       vae=vae, source=name)

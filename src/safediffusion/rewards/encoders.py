"""Frozen CLIP encoders: texts and images -> L2-normalised embeddings in one shared space.

    encoder = load_encoder(cfg.reward, device="cuda")
    z_text = encoder.encode_text(["a photo of a cat"])   # [N, D], ||z|| = 1, float32
    z_img = encoder.encode_images(images)               # images [B, 3, H, W] in [0, 1] -> [B, D]

Two backends share one interface (:class:`ClipEncoder`) and one tensor preprocessing
(:func:`~safediffusion.rewards.preprocess.clip_preprocess`):

- :class:`HFClipEncoder`: a transformers ``CLIPModel`` + ``CLIPTokenizer`` (local folder or hub id);
- :class:`OpenClipEncoder`: an open_clip model, e.g. HPSv2.1 (ViT-H-14 + the HPS fine-tuned state dict).
  Needs the optional ``open_clip`` extra.

Encoders are frozen (``eval()``, ``requires_grad=False``) but do not switch off autograd: under the caller's
grad mode, gradients flow from image embeddings back to the input pixels.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from safediffusion.errors import LOAD_ERRORS, UserError, first_line
from safediffusion.rewards.preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess


class ClipEncoder(ABC):
    """A frozen CLIP: ``encode_text(list[str]) -> [N, D]`` and ``encode_images([B, 3, H, W]) -> [B, D]``.

    Both outputs are float32, L2-normalised along ``D`` (so a dot product is a cosine), on
    :attr:`device`. Images are in [0, 1], any size and device; they are preprocessed with
    :func:`clip_preprocess` to ``image_size`` and normalised with ``mean`` / ``std``.

    Subclasses implement the raw (unnormalised, projected) feature extractors
    :meth:`_text_features` and :meth:`_image_features`, plus :attr:`embed_dim`; they keep the network in ``self.model``.
    """

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    text_batch_size: int = 256

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """``D``, the size of the joint embedding space."""

    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (inputs are moved here)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype (pixel values are cast to it)."""
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ClipEncoder:
        """Move (and optionally cast) the model; returns ``self``."""
        self.model.to(device=device, dtype=dtype)
        return self

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """Projected text features ``[N, D]`` (not normalised) for at most ``text_batch_size`` texts."""

    @abstractmethod
    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[B, D]`` (not normalised) for preprocessed pixel values."""

    # ------------------------------------------------------------------ shared
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> pixel values ``[B, 3, S, S]`` on the model's device/dtype."""
        return clip_preprocess(images.to(self.device), self.image_size, self.mean, self.std, dtype=self.dtype)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``z_img = normalize(f_img(preprocess(x)))``: ``[B, 3, H, W]`` in [0, 1] -> ``[B, D]`` float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        features = self._image_features(self.preprocess(images))
        return F.normalize(features.float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``z_text = normalize(f_text(t))``: ``N`` strings -> ``[N, D]`` float32, batched and truncated."""
        if isinstance(texts, str):
            raise TypeError("encode_text expects a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.embed_dim, device=self.device)
        chunks = [self._text_features(texts[i:i + self.text_batch_size])
                  for i in range(0, len(texts), self.text_batch_size)]
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, embed_dim={self.embed_dim}, "
                f"image_size={self.image_size}, device={self.device})")


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------- transformers


def projected_features(output: Any) -> torch.Tensor:
    """The projected features from ``CLIPModel.get_{text,image}_features``' return value.

    transformers 4.x returns the tensor ``[N, D]``; transformers 5 returns a ``BaseModelOutputWithPooling``
    whose ``pooler_output`` holds the projected features (a tuple with it at index 1 when
    ``return_dict=False``).
    """
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]
    raise TypeError(f"cannot find projected CLIP features in a {type(output).__name__}")


def _read_preprocessor_stats(directory: Path) -> tuple[list[float] | None, list[float] | None]:
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"'{path}' is not valid JSON ({type(e).__name__})",
                        "fix or delete the file") from None
    return data.get("image_mean"), data.get("image_std")


def _rgb_stats(values: Sequence[float] | None, default: tuple[float, float, float],
               what: str) -> tuple[float, float, float]:
    if values is None:
        return default
    values = [float(v) for v in values]
    if len(values) != 3:
        raise UserError(f"CLIP image {what} must have 3 values (RGB), got {values}",
                        "fix image_mean/image_std in preprocessor_config.json")
    return values[0], values[1], values[2]


class HFClipEncoder(ClipEncoder):
    """A transformers ``CLIPModel`` + ``CLIPTokenizer``.

    Text: tokenised with padding to the longest prompt and truncation to the model's context length
    (CLIP's causal text transformer pools at the end-of-text token, so padding does not change features).
    Images: :func:`clip_preprocess` to ``vision_config.image_size``.
    """

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, image_size: int,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, name: str = "clip",
                 text_batch_size: int = 256) -> None:
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = _rgb_stats(mean, CLIP_MEAN, "mean")
        self.std = _rgb_stats(std, CLIP_STD, "std")
        self.name = name
        self.text_batch_size = text_batch_size
        text_positions = model.config.text_config.max_position_embeddings
        self.max_length = min(int(tokenizer.model_max_length), int(text_positions))

    @classmethod
    def from_model(cls, model: CLIPModel, tokenizer: CLIPTokenizer, image_size: int | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   name: str = "clip") -> HFClipEncoder:
        """Wrap an in-memory model; ``image_size`` defaults to ``vision_config.image_size``."""
        size = image_size if image_size is not None else model.config.vision_config.image_size
        return cls(model, tokenizer, size, mean if mean is not None else CLIP_MEAN,
                   std if std is not None else CLIP_STD, name=name)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, revision: str | None = None) -> HFClipEncoder:
        """Load a transformers CLIP folder (``config.json``, ``model.safetensors``, tokenizer files and
        optionally ``preprocessor_config.json`` for mean/std) or a hub id (from the local HF cache, or
        downloaded when online). Weights are read from safetensors only, in ``dtype`` (default float32).
        """
        from safediffusion.models.bundle import load_tokenizer
        from safediffusion.models.clip_folder import resolve_clip_dir

        root = resolve_clip_dir(name_or_dir, revision, what="reward encoder")
        try:
            model = CLIPModel.from_pretrained(root, use_safetensors=True, dtype=dtype or torch.float32)
        except LOAD_ERRORS as e:
            raise UserError(f"could not load the reward encoder from '{root}': {first_line(e)}",
                            "the folder must hold a transformers CLIPModel saved as safetensors") from None
        tokenizer = load_tokenizer(root)
        mean, std = _read_preprocessor_stats(root)
        encoder = cls.from_model(model, tokenizer, mean=mean, std=std, name=name_or_dir)
        return encoder.to(device)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.out_features)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        return projected_features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                               attention_mask=tokens["attention_mask"]))

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return projected_features(self.model.get_image_features(pixel_values=pixel_values))


# ---------------------------------------------------------------------- open_clip


def import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise UserError("an open_clip reward encoder (reward.encoder_type=open_clip, or reward.encoder=hpsv2.1 "
                        "or hpsv2) needs the open_clip extra",
                        "pip install 'safediffusion[open_clip]' (needs torchvision)") from None
    return open_clip


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch checkpoint read with ``weights_only=True``.

    Checkpoints that wrap the weights (HPS: ``{"state_dict": {...}}``) are unwrapped, and the
    ``"module."`` prefix left by DistributedDataParallel is stripped from every key.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"fine-tuned reward encoder weights '{path}' do not exist",
                        "set reward.open_clip_finetuned to an existing .pt/.safetensors file (or unset it with "
                        "reward.encoder=hpsv2.1 to download the HPSv2.1 checkpoint)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(p))
        except LOAD_ERRORS as e:
            raise UserError(f"cannot read '{path}' as safetensors ({first_line(e, 160)})",
                            "re-export the weights with safetensors.torch.save_file") from None
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise UserError(f"cannot read '{path}' as a weights-only checkpoint ({first_line(e, 160)})",
                            "convert it to .safetensors (a plain dict of tensors)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"'{path}' does not hold a state dict of tensors",
                        "pass a checkpoint with the model weights (optionally under 'state_dict')")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _square_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    sizes = [int(v) for v in value]
    if len(set(sizes)) != 1:
        raise UserError(f"open_clip model expects non-square {sizes} images", "use a square-input model")
    return sizes[0]


class OpenClipEncoder(ClipEncoder):
    """An open_clip model (``encode_text`` / ``encode_image``) and its tokenizer.

    Image size, mean and std come from ``model.visual.preprocess_cfg`` (open_clip >= 2.23), falling back
    to ``model.visual.image_size`` and OpenAI CLIP's statistics.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor],
                 image_size: int | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, name: str = "open_clip",
                 text_batch_size: int = 256) -> None:
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        visual = getattr(model, "visual", None)
        cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
        size = (image_size or _square_size(cfg.get("size"))
                or _square_size(getattr(visual, "image_size", None)))
        if size is None:
            raise ValueError("cannot tell the open_clip model's image size; pass image_size")
        self.image_size = int(size)
        self.mean = _rgb_stats(mean if mean is not None else cfg.get("mean"), CLIP_MEAN, "mean")
        self.std = _rgb_stats(std if std is not None else cfg.get("std"), CLIP_STD, "std")
        self.name = name
        self.text_batch_size = text_batch_size
        output_dim = getattr(visual, "output_dim", None)
        if output_dim is None:
            with torch.no_grad():
                output_dim = self._text_features(["a"]).shape[-1]
        self._embed_dim = int(output_dim)

    @classmethod
    def from_pretrained(cls, arch: str = "ViT-H-14", pretrained: str | None = None,
                        finetuned_state_dict: str | Path | None = None,
                        device: torch.device | str = "cpu") -> OpenClipEncoder:
        """``open_clip.create_model_and_transforms(arch, pretrained=...)``, then optionally load a fine-tuned
        state dict over it (strictly). HPSv2.1: ``arch="ViT-H-14"``, ``finetuned_state_dict=
        "HPS_v2.1_compressed.pt"`` (``pretrained`` may stay None: the fine-tune replaces every weight).
        """
        open_clip = import_open_clip()
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device="cpu")
        except RuntimeError as e:
            raise UserError(f"open_clip could not create '{arch}' (pretrained={pretrained!r}): {first_line(e)}",
                            "check reward.open_clip_arch and reward.open_clip_pretrained") from None
        if finetuned_state_dict is not None:
            state = load_state_dict_file(finetuned_state_dict)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise UserError(f"'{finetuned_state_dict}' does not fit open_clip '{arch}': {first_line(e)}",
                                "check that reward.open_clip_arch matches the checkpoint") from None
        name = f"open_clip:{arch}" + (f":{Path(finetuned_state_dict).name}" if finetuned_state_dict else "")
        encoder = cls(model, open_clip.get_tokenizer(arch), name=name)
        return encoder.to(device)

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


# ---------------------------------------------------------------------- config

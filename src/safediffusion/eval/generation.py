"""Image generation for evaluation: batched, seeded per image, resumable, named by case number.

Image ``k`` of a record is drawn from ``torch.Generator().manual_seed(seed + k)`` (the record's seed, or the
run's base seed when the file has none). A record's guidance scale is its file's unless ``force_guidance`` (then
``guidance`` applies to every row, as I2P's and ESD's scripts do); with ``row_sizes`` a record's
``width``/``height`` (I2P's ``sd_image_width``/``sd_image_height``) set its image size. Generators are created on the CPU and passed as a list, one per
image, so an image does not depend on the batch it falls in nor on the device. Records that share a guidance
scale are batched together (the scale is one number per pipeline call).

Bundles with a VAE run through diffusers' ``StableDiffusionPipeline`` built from the bundle's parts, with
the selected scheduler (``lms`` is the ESD / RECE / SafeDiffusion-R1 convention, ``pndm`` the pipeline's default
that I2P and GenEval use; ``ddim``, ``pndm``, ``euler``, ``euler_a``, ``dpm``,
``heun``, ``ddpm``, ``unipc``). Pixel-space bundles (``vae is None``) use :func:`sample_images`, a plain
scheduler loop with classifier-free guidance.

Layout of ``out_dir``::

    generation.json      settings that change the images (model, scheduler, steps, resolution, ...)
    metadata.jsonl       one line per finished image: case_number, sample, image (relative path), prompt,
                         seed, guidance, categories, ...
    images/00021.png     flat layout (``00021_01.png`` with several images per prompt)
    00000/samples/0000.png + 00000/metadata.jsonl    GenEval layout

Re-running with the same settings skips images that are listed in ``metadata.jsonl`` and exist on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from safediffusion.errors import UserError
from safediffusion.eval.suites import PromptRecord
from safediffusion.models.bundle import ModelBundle
from safediffusion.sampling.guidance import guided_noise_pred


def _scheduler_classes() -> dict[str, type]:
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        LMSDiscreteScheduler,
        PNDMScheduler,
        UniPCMultistepScheduler,
    )

    return {
        "lms": LMSDiscreteScheduler,
        "ddim": DDIMScheduler,
        "pndm": PNDMScheduler,
        "euler": EulerDiscreteScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "heun": HeunDiscreteScheduler,
        "ddpm": DDPMScheduler,
        "unipc": UniPCMultistepScheduler,
    }


SCHEDULER_NAMES = ("lms", "ddim", "pndm", "euler", "euler_a", "dpm", "heun", "ddpm", "unipc")


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh diffusers scheduler of kind ``name`` built ``from_config`` of the model's scheduler config.

    PNDM skips its Runge-Kutta warm-up steps (``skip_prk_steps=True``), as in every SD v1.x scheduler config
    (the PLMS sampler of latent-diffusion).
    """
    classes = _scheduler_classes()
    if name not in classes:
        raise UserError(f"unknown scheduler '{name}'", f"choose one of: {', '.join(SCHEDULER_NAMES)}")
    overrides = {"skip_prk_steps": True} if name == "pndm" else {}
    return classes[name].from_config(base_config, **overrides)


@dataclass
class GenerationSettings:
    """How images are made. ``guidance`` / ``seed`` apply to records whose file does not fix them."""

    scheduler: str = "lms"
    steps: int = 50
    guidance: float = 7.5
    seed: int = 42
    resolution: int | None = None
    batch_size: int = 8
    images_per_prompt: int = 1
    negative_prompt: str = ""
    layout: str = "flat"
    model: str = ""
    conditioning: str = ""
    force_guidance: bool = False
    row_sizes: bool = False

    def validate(self) -> None:
        if self.scheduler not in SCHEDULER_NAMES:
            raise UserError(f"unknown scheduler '{self.scheduler}'", f"choose one of: {', '.join(SCHEDULER_NAMES)}")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}", "pass a positive number of steps")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}", "pass a positive batch size")
        if self.images_per_prompt < 1:
            raise UserError(f"--images-per-prompt must be >= 1, got {self.images_per_prompt}", "pass >= 1")
        if self.layout not in ("flat", "geneval"):
            raise ValueError(f"unknown layout {self.layout!r}")
        if self.resolution is not None and self.resolution < 8:
            raise UserError(f"--resolution must be >= 8, got {self.resolution}", "pass e.g. 512 for SD v1.x")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change pixels (batch size does not: generators are per image)."""
        d = asdict(self)
        d.pop("batch_size")
        for k in ("force_guidance", "row_sizes"):  # absent when off: folders of earlier versions still resume
            if not d[k]:
                d.pop(k)
        return d


@dataclass
class ImageEntry:
    """One generated image: which record, which sample, where (relative to the run folder), which seed."""

    record: PromptRecord
    sample: int
    path: Path
    seed: int
    guidance: float
    meta: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # (width, height) at SD's 512 px scale; None: the run's resolution

    @property
    def key(self) -> tuple[int, int]:
        return (self.record.case_number, self.sample)


def image_relpath(case_number: int, sample: int, settings: GenerationSettings) -> str:
    if settings.layout == "geneval":
        return f"{case_number:05d}/samples/{sample:04d}.png"
    if settings.images_per_prompt == 1:
        return f"images/{case_number:05d}.png"
    return f"images/{case_number:05d}_{sample:02d}.png"


def plan_images(records: Sequence[PromptRecord], settings: GenerationSettings) -> list[ImageEntry]:
    """Every image the run needs, in record order."""
    out = []
    for r in records:
        seed = r.seed if r.seed is not None else settings.seed
        guidance = settings.guidance if settings.force_guidance or r.guidance is None else r.guidance
        size = (r.width, r.height) if settings.row_sizes and r.width and r.height else None
        for k in range(settings.images_per_prompt):
            out.append(ImageEntry(record=r, sample=k, path=Path(image_relpath(r.case_number, k, settings)),
                                  seed=seed + k, guidance=float(guidance), size=size))
    return out


def scaled_size(size: tuple[int, int], native: int, multiple: int) -> tuple[int, int]:
    """``(width, height)`` given at SD's native 512 px, scaled to a model of ``native`` px and rounded to a
    multiple of ``multiple`` (at least one): ``512 x 384`` stays itself for SD and is ``64 x 48`` at 64 px."""
    return tuple(max(multiple, round(v * native / 512 / multiple) * multiple) for v in size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_images(bundle: ModelBundle, scheduler: Any, cond: torch.Tensor, uncond: torch.Tensor | None,
                  generators: list[torch.Generator], steps: int, guidance: float,
                  resolution: int | None = None, eta: float = 0.0) -> torch.Tensor:
    """Sample ``[B, 3, H, W]`` images in [0, 1] with a scheduler loop and classifier-free guidance.

    ``x_T ~ N(0, I) * init_noise_sigma`` drawn per image from its generator (shape ``bundle.latent_shape``);
    at each timestep ``t`` ``eps = eps(x_t, ∅) + w (eps(x_t, c) - eps(x_t, ∅))`` (one batched call, see
    :func:`safediffusion.sampling.guidance.guided_noise_pred`; no guidance when ``w <= 1``) and
    ``x_{t-1} = scheduler.step(eps, t, x_t)`` (DDIM: deterministic with the default ``eta = 0``; with ``eta > 0``
    the step noise comes from the same per-image generators, so images stay reproducible). The result goes through
    ``bundle.decode`` (VAE decode, or the identity for pixel-space models). Used for bundles without a VAE,
    where diffusers' SD pipeline does not apply, and by the miniature world's evaluation.

    Args:
        cond: text states ``[B, L, D]``; uncond: ``[B, L, D]`` or ``[1, L, D]`` (broadcast), or ``None``.
    """
    device, dtype = bundle.device, bundle.unet.dtype
    c, h, w = bundle.latent_shape(resolution)
    x = torch.cat([torch.randn((1, c, h, w), generator=g, dtype=torch.float32) for g in generators])
    x = x.to(device=device, dtype=dtype)
    scheduler.set_timesteps(steps, device=device)
    x = x * scheduler.init_noise_sigma
    cond = cond.to(dtype)
    uncond = uncond.to(dtype) if uncond is not None else None
    params = _step_params(scheduler)
    extra: dict[str, Any] = {"generator": generators} if "generator" in params else {}
    if eta:
        if "eta" not in params:
            raise UserError(f"{type(scheduler).__name__} has no eta", "use a DDIM scheduler for eta > 0")
        extra["eta"] = eta
    for t in scheduler.timesteps:
        eps = guided_noise_pred(bundle.unet, scheduler.scale_model_input(x, t), t, cond, uncond, guidance)
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return bundle.decode(x)


def _step_params(scheduler: Any) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def build_pipeline(bundle: ModelBundle, scheduler: Any) -> Any:
    """diffusers ``StableDiffusionPipeline`` from the bundle's parts (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=bundle.vae, text_encoder=bundle.text_encoder, tokenizer=bundle.tokenizer,
                                   unet=bundle.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


ConditioningTransform = Callable[[torch.Tensor], torch.Tensor]
# (prompts, seeds, guidance, size) -> uint8 images [B, H, W, 3]; size: a row's (width, height) or None
BatchGenerator = Callable[[list[str], list[int], float, "tuple[int, int] | None"], np.ndarray]


class ImageGenerator:
    """Turns batches of (prompt, seed) into uint8 images with a model bundle and a scheduler.

    ``transform`` (optional) maps the text-encoder hidden states ``[B, L, D]`` of the prompts before they
    condition the UNet (the unconditional branch is left as is); the adaptive attack uses it.
    """

    def __init__(self, bundle: ModelBundle, settings: GenerationSettings,
                 transform: ConditioningTransform | None = None) -> None:
        settings.validate()
        self.bundle = bundle
        self.settings = settings
        self.transform = transform
        self.scheduler = make_scheduler(settings.scheduler, bundle.scheduler.config)
        self.pipe = build_pipeline(bundle, self.scheduler) if bundle.vae is not None else None
        self._negative: torch.Tensor | None = None

    def _embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.bundle
        cond = b.encode_prompts(prompts)
        if self.transform is not None:
            cond = self.transform(cond)
        if self._negative is None:
            self._negative = b.encode_prompts([self.settings.negative_prompt])
        uncond = self._negative.expand(len(prompts), -1, -1)
        dtype = b.unet.dtype
        return cond.to(dtype), uncond.to(dtype)

    def pixel_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """``(width, height)`` in pixels of an image whose row asks for ``size`` (at 512 px scale) or none."""
        native = self.settings.resolution or self.bundle.image_size
        if size is None:
            return (native, native)
        down = len(getattr(self.bundle.unet.config, "down_block_types", ())) or 1
        return scaled_size(size, native, self.bundle.vae_scale_factor * 2 ** (down - 1))

    @torch.no_grad()
    def __call__(self, prompts: list[str], seeds: list[int], guidance: float,
                 size: tuple[int, int] | None = None) -> np.ndarray:
        """``[B, H, W, 3]`` uint8 images, image i seeded with ``seeds[i]``; ``size``: a row's (width, height)."""
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        cond, uncond = self._embed(prompts)
        res = self.settings.resolution
        if self.pipe is not None:
            width, height = self.pixel_size(size)
            images = self.pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=guidance,
                               num_inference_steps=self.settings.steps, height=height, width=width,
                               generator=generators, output_type="np").images
            images = np.asarray(images, dtype=np.float32)
        else:
            if size is not None and size[0] != size[1]:
                raise UserError("per-row image sizes need a latent diffusion model (with a VAE)",
                                "pass --no-row-sizes for this model")
            out = sample_images(self.bundle, self.scheduler, cond, uncond, generators,
                                self.settings.steps, guidance, res)
            images = out.permute(0, 2, 3, 1).float().cpu().numpy()
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------- the run


class GenerationRun:
    """Generate (or resume) every image of ``records`` into ``out_dir``; see the module docstring."""

    def __init__(self, out_dir: str | Path, records: Sequence[PromptRecord], settings: GenerationSettings) -> None:
        settings.validate()
        self.out_dir = Path(out_dir)
        self.records = list(records)
        self.settings = settings
        self.entries = plan_images(self.records, settings)

    # -- bookkeeping
    @property
    def metadata_path(self) -> Path:
        return self.out_dir / "metadata.jsonl"

    def _check_settings(self, overwrite: bool, write: bool = True) -> None:
        path = self.out_dir / "generation.json"
        new = self.settings.fingerprint()
        if path.is_file() and not overwrite:
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                old = None
            if isinstance(old, dict) and old != new:
                diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
                raise UserError(f"'{self.out_dir}' holds images made with other settings ({'; '.join(diffs)})",
                                "use another --out folder, or pass --overwrite to regenerate")
        if write:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(new, indent=2))

    def _line(self, e: ImageEntry) -> dict[str, Any]:
        r = e.record
        line = {"case_number": r.case_number, "sample": e.sample, "image": e.path.as_posix(), "prompt": r.prompt,
                "seed": e.seed, "guidance": e.guidance}
        if e.size is not None:
            line["size"] = list(e.size)
        if r.categories:
            line["categories"] = list(r.categories)
        if r.hard is not None:
            line["hard"] = r.hard
        if r.extra:
            line["extra"] = r.extra
        return line

    def finished(self, overwrite: bool = False) -> dict[tuple[int, int], dict[str, Any]]:
        """Metadata lines of finished images (listed and on disk); conflicting lines raise a UserError."""
        if overwrite or not self.metadata_path.is_file():
            return {}
        wanted = {e.key: self._line(e) for e in self.entries}
        done: dict[tuple[int, int], dict[str, Any]] = {}
        for i, text in enumerate(self.metadata_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                key = (int(line["case_number"]), int(line["sample"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(f"{self.metadata_path}, line {i}: not a metadata line of this tool",
                                "use another --out folder, or pass --overwrite") from None
            if key in wanted:
                expect = wanted[key]
                for k in ("prompt", "seed", "guidance", "image"):
                    if line.get(k) != expect[k]:
                        raise UserError(f"'{self.out_dir}' already has case {key[0]} (sample {key[1]}) with another "
                                        f"{k} ({line.get(k)!r}, now {expect[k]!r})",
                                        "use another --out folder for another prompt file, or pass --overwrite")
            if (self.out_dir / line["image"]).is_file():
                done[key] = line
        return done

    # -- generation
    def run(self, make_generator: Callable[[], BatchGenerator], progress: bool = True,
            overwrite: bool = False, desc: str = "generating") -> list[ImageEntry]:
        """Generate every missing image; returns all entries (finished ones included), in record order.

        ``make_generator()`` returns the batch generator (e.g. an :class:`ImageGenerator`); it is only called
        when an image is missing, so a finished run never loads the model.
        """
        self._check_settings(overwrite, write=False)
        done = self.finished(overwrite)
        todo = [e for e in self.entries if e.key not in done]
        # load the model before writing anything: a bad --model must leave no half-written folder
        generator = make_generator() if todo else None
        self._check_settings(overwrite)
        if overwrite and self.metadata_path.exists():
            self.metadata_path.unlink()
        # keep only the lines of finished images (drops lines whose file vanished)
        kept = [e for e in self.entries if e.key in done]
        other = [line for key, line in done.items() if key not in {e.key for e in self.entries}]
        self._rewrite_metadata([done[e.key] for e in kept] + other)
        if self.settings.layout == "geneval":
            self._write_geneval_metadata()
        if generator is not None:
            bs = self.settings.batch_size
            groups: dict[tuple[float, tuple[int, int] | None], list[ImageEntry]] = {}
            for e in todo:
                groups.setdefault((e.guidance, e.size), []).append(e)
            bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress)
            with open(self.metadata_path, "a", encoding="utf-8") as meta:
                for (guidance, size), items in groups.items():
                    for start in range(0, len(items), bs):
                        batch = items[start:start + bs]
                        prompts, seeds = [e.record.prompt for e in batch], [e.seed for e in batch]
                        images = (generator(prompts, seeds, guidance, size) if size is not None
                                  else generator(prompts, seeds, guidance))
                        for e, img in zip(batch, images):
                            _save_png(img, self.out_dir / e.path)
                            meta.write(json.dumps(self._line(e)) + "\n")
                        meta.flush()
                        bar.update(len(batch))
            bar.close()
        return self.entries

    def _rewrite_metadata(self, lines: list[dict[str, Any]]) -> None:
        tmp = self.metadata_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.metadata_path)

    def _write_geneval_metadata(self) -> None:
        for r in self.records:
            folder = self.out_dir / f"{r.case_number:05d}"
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            meta = r.extra.get("metadata", {"prompt": r.prompt})
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n", encoding="utf-8")


def _save_png(image: np.ndarray, path: Path) -> None:
    """Write atomically (a crash never leaves a truncated PNG that a resume would trust)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_images(bundle: ModelBundle, records: Sequence[PromptRecord], out_dir: str | Path,
                    settings: GenerationSettings, transform: ConditioningTransform | None = None,
                    progress: bool = True, overwrite: bool = False) -> list[ImageEntry]:
    """Convenience: :class:`GenerationRun` with an :class:`ImageGenerator` for ``bundle``."""
    run = GenerationRun(out_dir, records, settings)
    return run.run(lambda: ImageGenerator(bundle, settings, transform), progress=progress, overwrite=overwrite)

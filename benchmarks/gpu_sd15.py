"""SD 1.5-size dry run: rollout speed vs diffusers, GRPO epoch time and its overhead, memory, first ratio.

Builds Stable Diffusion v1.5's UNet, VAE and CLIP ViT-L/14 text encoder from their published configs
(``sd15_configs.json`` next to this file; nothing is downloaded) and an HPSv2.1-architecture reward (open_clip
``ViT-H-14``, ``pretrained=None``), all with random weights, and measures on the available device:

1. **Rollout**: images/s of :func:`safediffusion.sampling.sample_rollout` and of diffusers'
   ``StableDiffusionPipeline`` with the same modules, latents, noise, steps, eta, CFG scale and batch
   (``train.sample_batch_size``), under the same autocast; ratio ``t_ours / t_diffusers`` (interleaved runs,
   medians).
2. **GRPO epoch** of the paper recipe (``configs/sd15-paper.yaml``: per GPU P=4 prompts x G=16, 50 DDIM steps,
   CFG 5, bf16 autocast, gradient checkpointing), once with the full UNet trained and once with LoRA
   (``model.use_lora=true``): seconds per epoch, split into rollout (sampling + decode + reward) and update.
   With ``--timestep-fraction`` below the paper's 0.98 the update trains K < 49 steps per sample; the update
   is linear in K, so the paper epoch is also given as ``t_rollout + t_update * K_paper / K``.
3. **Overhead**: ``epoch / bare``, the epoch's wall time over the bare UNet compute it contains — the same UNet
   calls on random tensors of the same shapes (sampling: ``ceil(B / sample_batch) * T`` CFG-batched forwards;
   update: ``ceil(B / train_batch) * K`` CFG-batched forward+backward, one AdamW step per minibatch) — so the
   ratio is the price of reward, VAE decode, log-prob math and bookkeeping.
4. **Peak device memory** of each epoch (``torch.cuda.max_memory_allocated``; "-" on a CPU).
5. **First ratio**: the trainer's on-policy check ``first_ratio_max_abs_dev``, ``max_i |rho_i - 1|`` over the
   samples of the update's first micro-step, ``rho = exp(log pi_theta(x_{t-1}|x_t) - log pi_old)`` before any
   optimizer step: the recomputed transition log-probability (train mode, batch ``train_batch_size``, with
   grad) against the rollout's (eval mode, batch ``sample_batch_size``, no grad); the largest over the epochs
   run. Mathematically 1; the deviation is kernel and precision noise, and with the paper's
   ``clip_range = 1e-4`` a deviation above 1e-4 means clipping acts before any learning.

    # GPU, SD 1.5 size (docs/performance.md has the command with its flags and how to carry the wheels)
    python benchmarks/gpu_sd15.py --timestep-fraction 0.1
    # CPU smoke run at toy size (the test does this)
    python benchmarks/gpu_sd15.py --small
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

CONFIGS = Path(__file__).resolve().with_name("sd15_configs.json")
MODEL_NAME = "sd15-bench-random"
ENCODER_NAME = "sd15-bench-open-clip-random"
PAPER_TIMESTEP_FRACTION = 0.98


# ------------------------------------------------------------------------------------------------ models


def load_specs(small: bool) -> dict[str, Any]:
    """The architecture dicts of ``sd15_configs.json`` (``"small"`` or ``"sd15"``)."""
    return json.loads(CONFIGS.read_text(encoding="utf-8"))["small" if small else "sd15"]


def build_bundle(spec: dict[str, Any], seed: int, device: torch.device) -> Any:
    """A :class:`~safediffusion.models.bundle.ModelBundle` with random weights, initialised on ``device``.

    The tokenizer is the byte-level CLIP tokenizer of the tiny models (SD's BPE files are not shipped); it pads
    to the same 77 tokens, so every tensor has SD's shape.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from safediffusion.models.bundle import ModelBundle
    from safediffusion.models.tiny import byte_level_tokenizer

    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: an SD UNet's init on a CPU takes tens of seconds
        unet = UNet2DConditionModel(**spec["unet"]).eval()
        vae = AutoencoderKL(**spec["vae"]).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"])).eval()
    return ModelBundle(unet=unet, scheduler=DDIMScheduler(**spec["scheduler"]), text_encoder=text_encoder,
                       tokenizer=byte_level_tokenizer(), vae=vae, source=MODEL_NAME)


def build_reward_encoder(spec: dict[str, Any], device: torch.device | str) -> Any:
    """An :class:`~safediffusion.rewards.encoders.OpenClipEncoder` of ``spec["open_clip"]["arch"]`` with random
    weights (a custom architecture is registered with open_clip from ``spec["open_clip"]["config"]``)."""
    from safediffusion.rewards.encoders import OpenClipEncoder, import_open_clip

    open_clip = import_open_clip()
    oc = spec["open_clip"]
    if "config" in oc and oc["arch"] not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="open_clip_cfg_"))
        (folder / f"{oc['arch']}.json").write_text(json.dumps(oc["config"]))
        open_clip.add_model_config(folder / f"{oc['arch']}.json")
    torch.manual_seed(1)
    with torch.device(device):
        model = open_clip.create_model(oc["arch"], pretrained=None, device=device)
    return OpenClipEncoder(model, open_clip.get_tokenizer(oc["arch"]), name=f"open_clip:{oc['arch']}:random")


def register(spec: dict[str, Any], device: torch.device) -> None:
    """Make the random models known by name, as a plugin does: ``model.pretrained`` and ``reward.encoder``."""
    from safediffusion.registry import ENCODERS, MODELS, ModelEntry

    MODELS.register(MODEL_NAME, ModelEntry(build=lambda seed: build_bundle(spec, seed, device)), replace=True)
    ENCODERS.register(ENCODER_NAME, lambda dev: build_reward_encoder(spec, dev), replace=True)


# ------------------------------------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, float], key: str) -> Iterator[None]:
    """``out[key]``: peak allocated device memory (GiB) inside the block; NaN on a CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    out[key] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ rollout


def bench_rollout(spec: dict[str, Any], args: argparse.Namespace, device: torch.device,
                  dtype: torch.dtype) -> dict[str, float]:
    """``sample_rollout`` vs ``StableDiffusionPipeline.__call__`` at batch ``sample_batch_size`` (see the module
    doc); text encoder and VAE in ``dtype``, the UNet in float32 under autocast, as the trainer runs them."""
    from diffusers import StableDiffusionPipeline

    from safediffusion.sampling import make_initial_latents, sample_rollout

    bundle = build_bundle(spec, seed=0, device=device)
    if dtype != torch.float32:
        bundle.text_encoder.to(dtype)
        bundle.vae.to(dtype)
    batch = args.sample_batch_size
    cond = bundle.encode_prompts([f"a photo of object number {i}" for i in range(batch)])
    uncond = bundle.encode_prompts([""]).expand(batch, -1, -1)
    shape = bundle.latent_shape(args.resolution)
    x_T = make_initial_latents(batch, 1, shape, torch.Generator().manual_seed(0), device=device)
    pipe = StableDiffusionPipeline(bundle.vae, bundle.text_encoder, bundle.tokenizer, bundle.unet,
                                   copy.deepcopy(bundle.scheduler), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def ours() -> torch.Tensor:
        with autocast:
            return sample_rollout(bundle, cond, uncond, num_steps=args.steps, guidance_scale=args.guidance,
                                  eta=args.eta, initial_latents=x_T,
                                  generator=torch.Generator().manual_seed(1)).images

    @torch.no_grad()
    def theirs() -> torch.Tensor:
        with autocast:
            return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=x_T, height=args.resolution,
                        width=args.resolution, num_inference_steps=args.steps, guidance_scale=args.guidance,
                        eta=args.eta, generator=torch.Generator().manual_seed(1), output_type="pt").images

    diff = (ours().float().cpu() - theirs().float().cpu()).abs().max().item()  # also the warm-up
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            times[name].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ours_img_s": batch / med["ours"], "diffusers_img_s": batch / med["diffusers"],
            "ratio": med["ours"] / med["diffusers"], "max_abs_diff": diff}


# ------------------------------------------------------------------------------------------------ GRPO


def bare_unet_compute(trainer: Any) -> float:
    """Seconds of the UNet calls one epoch contains, on random tensors (see the module doc, item 3)."""
    cfg, acc = trainer.cfg, trainer.accelerator
    tc, sc = cfg.train, cfg.sampling
    device, dtype = acc.device, trainer.weight_dtype
    unet = trainer.unet
    C, h, w = trainer.bundle.latent_shape(sc.resolution)
    B = tc.prompts_per_epoch * tc.group_size
    L, D = trainer.uncond_embeds.shape[1:]
    K = min(trainer.num_train_timesteps, trainer.num_window_timesteps)
    cfg_factor = 2 if sc.guidance_scale > 1 else 1
    train_cfg = cfg_factor if tc.cfg_in_training else 1
    t = torch.tensor([500], device=device)

    def run() -> None:
        unet.eval()
        with torch.no_grad(), acc.autocast():
            for s in range(0, B, tc.sample_batch_size):
                n = cfg_factor * min(tc.sample_batch_size, B - s)
                x = torch.randn(n, C, h, w, device=device, dtype=dtype)
                ctx = torch.randn(n, L, D, device=device, dtype=dtype)
                for _ in range(sc.num_steps):
                    unet(x, t.expand(n), ctx)
        unet.train()
        for s in range(0, B, tc.train_batch_size):
            n = train_cfg * min(tc.train_batch_size, B - s)
            for _ in range(K):
                x = torch.randn(n, C, h, w, device=device, dtype=dtype)
                ctx = torch.randn(n, L, D, device=device, dtype=dtype)
                with acc.autocast():
                    out = unet(x, t.expand(n), ctx).sample
                acc.backward(out.float().pow(2).mean())
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        unet.eval()

    return timed(run, device)


def grpo_config(args: argparse.Namespace, use_lora: bool) -> Any:
    """``sd15-paper`` with the random models, built-in prompts and the requested sizes."""
    from safediffusion.config import load_config, resolve_config_path

    overrides = [
        f"model.pretrained={MODEL_NAME}", f"model.use_lora={str(use_lora).lower()}",
        f"reward.encoder={ENCODER_NAME}", "data.prompts=tiny:benign",
        f"sampling.resolution={args.resolution}", f"sampling.num_steps={args.steps}",
        f"sampling.guidance_scale={args.guidance}", f"sampling.eta={args.eta}",
        f"train.prompts_per_epoch={args.prompts}", f"train.group_size={args.group}",
        f"train.sample_batch_size={args.sample_batch_size}", f"train.train_batch_size={args.train_batch_size}",
        f"train.timestep_fraction={args.timestep_fraction}", f"train.mixed_precision='{args.mixed_precision}'",
        f"train.epochs={args.epochs}", "logging.progress=false", "logging.tensorboard=false",
    ]
    return load_config(resolve_config_path("sd15-paper"), overrides)


def bench_grpo(args: argparse.Namespace, accelerator: Any, use_lora: bool) -> dict[str, float]:
    """``args.epochs`` epochs (the first is a warm-up when there are several), then one bare replay."""
    from safediffusion.rl.trainer import GRPOTrainer

    device = accelerator.device
    cfg = grpo_config(args, use_lora)
    rollout_s, update_s, peaks, first, grad_norms, finite = [], [], [], [], [], True
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(cfg, tmp, accelerator=accelerator)
        for epoch in range(args.epochs):
            mem: dict[str, float] = {}
            with peak_memory(device, mem, "peak"):
                synchronize(device)
                t0 = time.perf_counter()
                batch = trainer._rollout(epoch)
                synchronize(device)
                t1 = time.perf_counter()
                stats = trainer._update(epoch, batch, trainer._advantages(batch))
                synchronize(device)
                t2 = time.perf_counter()
            rollout_s.append(t1 - t0)
            update_s.append(t2 - t1)
            peaks.append(mem["peak"])
            first.append(stats["first_ratio_max_abs_dev"])  # the trainer's on-policy check
            grad_norms.append(stats["grad_norm"])
            finite &= bool(torch.isfinite(batch["rewards"]).all() and torch.isfinite(batch["rollout"].log_probs).all()
                           and math.isfinite(stats["loss"]))
            del batch
        bare = bare_unet_compute(trainer)
        K = min(trainer.num_train_timesteps, trainer.num_window_timesteps)
        params = sum(p.numel() for p in trainer.params)
        del trainer
    accelerator.free_memory()
    free_device_memory()
    measured = slice(1, None) if args.epochs > 1 else slice(None)
    r, u = statistics.median(rollout_s[measured]), statistics.median(update_s[measured])
    K_paper = max(1, int(args.steps * PAPER_TIMESTEP_FRACTION))
    return {"rollout_s": r, "update_s": u, "epoch_s": r + u, "epoch_paper_s": r + u * K_paper / K, "K": K,
            "K_paper": K_paper, "bare_s": bare, "ratio": (r + u) / bare, "peak_gib": max(peaks),
            "first_ratio": max(first), "grad_norm": grad_norms[-1],
            "trained_params": params, "finite": float(finite)}


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="toy-width models of the same block types (CPU smoke)")
    parser.add_argument("--resolution", type=int, default=None, help="image side in pixels (512; --small: 64)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps T (50; --small: 4)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per epoch and device P (4; --small: 1)")
    parser.add_argument("--group", type=int, default=None, help="rollouts per prompt G (16; --small: 2)")
    parser.add_argument("--sample-batch-size", type=int, default=None, help="rollout chunk (4 as sd15-paper.yaml, at most P*G)")
    parser.add_argument("--train-batch-size", type=int, default=None, help="update minibatch (4 as sd15-paper.yaml: equal UNet batch shapes, at most P*G)")
    parser.add_argument("--timestep-fraction", type=float, default=PAPER_TIMESTEP_FRACTION,
                        help="K = int(T * this) trained steps per sample (paper 0.98; the update time is linear in K)")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2, help="GRPO epochs per mode; the first is a warm-up if > 1")
    parser.add_argument("--repeats", type=int, default=3, help="timed rollouts of each implementation")
    parser.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                        help="autocast dtype (bf16 on a GPU, as the paper; no on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on a CPU")
    parser.add_argument("--skip-rollout", action="store_true", help="skip the rollout comparison with diffusers")
    args = parser.parse_args(argv)
    small = args.small
    defaults = {"resolution": 64 if small else 512, "steps": 4 if small else 50, "prompts": 1 if small else 4,
                "group": 2 if small else 16}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    B = args.prompts * args.group
    args.sample_batch_size = min(args.sample_batch_size or 4, B)
    args.train_batch_size = min(args.train_batch_size or 4, B)
    if args.mixed_precision is None:
        args.mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    return args


def count(n: float) -> str:
    """``859.5M``, ``797.2K``: a parameter count."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from accelerate import Accelerator

    spec = load_specs(args.small)
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=cpu)
    device = accelerator.device
    register(spec, device)
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device={name} torch={torch.__version__} models={'small' if args.small else 'sd15'} "
          f"resolution={args.resolution} T={args.steps} P={args.prompts} G={args.group} "
          f"sample_batch={args.sample_batch_size} train_batch={args.train_batch_size} cfg={args.guidance} "
          f"eta={args.eta} precision={args.mixed_precision}")
    sys.stdout.flush()

    if not args.skip_rollout:
        r = bench_rollout(spec, args, device, dtype)
        free_device_memory()  # the rollout's models are gone with its frame
        print(f"\nrollout (batch {args.sample_batch_size}): ours {r['ours_img_s']:.3f} img/s, diffusers "
              f"{r['diffusers_img_s']:.3f} img/s, time ratio ours/diffusers {r['ratio']:.3f} (target <= 1.05), "
              f"max|image diff| {r['max_abs_diff']:.2e}")
        sys.stdout.flush()

    print(f"\n{'mode':<5} {'params':>8} {'K':>3} {'rollout s':>10} {'update s':>9} {'epoch s':>8} "
          f"{'epoch s@K' + str(max(1, int(args.steps * PAPER_TIMESTEP_FRACTION))):>11} {'bare s':>8} "
          f"{'epoch/bare':>10} {'peak GiB':>9} {'first |rho-1|':>13} {'grad norm':>9} {'finite':>6}", flush=True)
    for mode in args.modes:  # each row as soon as it is measured (a run cut short keeps what it has)
        g = bench_grpo(args, accelerator, use_lora=mode == "lora")
        print(f"{mode:<5} {count(g['trained_params']):>8} {g['K']:>3d} {g['rollout_s']:>10.2f} "
              f"{g['update_s']:>9.2f} {g['epoch_s']:>8.2f} {g['epoch_paper_s']:>11.2f} {g['bare_s']:>8.2f} "
              f"{g['ratio']:>10.3f} {fmt(g['peak_gib'], '.1f'):>9} {fmt(g['first_ratio'], '.2e'):>13} "
              f"{g['grad_norm']:>9.2e} {'yes' if g['finite'] else 'NO':>6}", flush=True)
    print("\nepoch/bare target <= 1.15; first |rho-1| should be < clip_range (paper 1e-4)")


if __name__ == "__main__":
    main()

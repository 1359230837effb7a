"""Pretraining of the tiny text-to-image UNet on VAE latents, conditioned on the frozen tiny-CLIP text tower.

Standard DDPM epsilon objective (as SD): ``z_0 = s * mean(q(z|x))`` (``s`` = VAE scaling factor),
``t ~ U{0..999}``, ``eps ~ N(0, I)``, ``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps``,
``L = mean_b w_t ||eps_theta(z_t, t, c) - eps||^2`` with ``c`` = the text tower's last hidden states
``[B, 32, 64]`` and the Min-SNR-gamma weight ``w_t = min(SNR_t, gamma) / SNR_t``, ``SNR_t = abar_t / (1 - abar_t)``
(Hang et al. 2023, gamma = 5; as diffusers' ``--snr_gamma``): it stops the many nearly noise-free steps from
dominating the gradient, so the steps that decide layout and shape get their share.
With ``prediction_type="v_prediction"`` the target is ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0`` and the
weight ``min(SNR_t, gamma) / (SNR_t + 1)`` (the same weighting of the epsilon error); ``zero_snr`` rescales the
betas so that ``abar_999 = 0`` (Lin et al. 2024: training then never shows the model a trace of ``z_0`` at the
first sampling step, where sampling starts from pure noise).
Captions are replaced by the empty caption with probability ``p_uncond`` (0.1) for classifier-free
guidance. An EMA of the weights (decay 0.998) is what gets shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from safediffusion.mini.architectures import build_scheduler, build_unet
from safediffusion.mini.data import PairDataset
from safediffusion.mini.pretrain.common import EMA, Checkpoint, batch_indices, cosine_lr, step_generator
from safediffusion.mini.render import to_tensor


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """The CLIP's text tower as a standalone ``CLIPTextModel`` (same weights, no projection)."""
    enc = CLIPTextModel(clip.config.text_config)
    # transformers 5: CLIPModel.text_model is a CLIPTextModel; 4.x: both wrap a CLIPTextTransformer
    getattr(enc, "text_model", enc).load_state_dict(clip.text_model.state_dict())
    return enc.eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: np.ndarray, cache: Path, batch: int = 512,
                   progress: bool = True) -> torch.Tensor:
    """Scaled posterior means ``[N, 4, h, w]`` (on the CPU) of uint8 images, cached as ``.npy`` (float32);
    computed on the VAE's device."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if len(z) == len(images):
            return torch.from_numpy(z)
    out = []
    for i in tqdm(range(0, len(images), batch), desc="encoding latents", disable=not progress):
        x = (to_tensor(images[i:i + batch]) * 2 - 1).to(vae.device)
        out.append((vae.encode(x).latent_dist.mean * vae.config.scaling_factor).cpu())
    z = torch.cat(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, z.numpy())
    return z


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights per timestep; all ones when ``gamma <= 0``.

    ``min(SNR_t, gamma) / SNR_t`` on the epsilon loss, ``min(SNR_t, gamma) / (SNR_t + 1)`` on the v loss
    (the same weighting, since ``||v_hat - v||^2 = (1 + 1/SNR_t) ||eps_hat - eps||^2``; finite at SNR 0).
    """
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    if gamma <= 0:
        return torch.ones_like(snr)
    return snr.clamp(max=gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)


def train_unet(data: PairDataset, workdir: str | Path, steps: int = 3600, batch_size: int = 64, lr: float = 1e-3,
               p_uncond: float = 0.1, ema_decay: float = 0.998, snr_gamma: float = 5.0, seed: int = 0,
               progress: bool = True, pooled_text: bool = False, variant: str = "shipped",
               prediction_type: str = "v_prediction", zero_snr: bool = True, device: str | torch.device = "cpu",
               stage: str = "unet"):
    """Train (or resume) the UNet; returns the EMA UNet and writes ``<workdir>/<stage>/final``.

    ``variant``/``pooled_text``: the layout (:func:`~safediffusion.mini.architectures.build_unet`);
    ``prediction_type``/``zero_snr``: the objective (:func:`~safediffusion.mini.architectures.build_scheduler`),
    recorded in ``final/objective.json`` for the export. ``device``: where the UNet trains; batches and noise
    are drawn on the CPU as always, so the run is the same on any device up to floating-point rounding.
    """
    work = Path(workdir)
    device = torch.device(device)
    clip = CLIPModel.from_pretrained(work / "clip" / "final").eval()
    tokenizer = CLIPTokenizer.from_pretrained(work / "clip" / "final")
    text_encoder = text_encoder_from_clip(clip)
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final").eval()
    latents = encode_latents(vae, data.images, work / "unet" / f"latents_{len(data)}.npy", progress=progress)
    ids = tokenizer(list(data.captions), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids[0]
    scheduler = build_scheduler(prediction_type, zero_snr)
    torch.manual_seed(seed)
    unet = build_unet(pooled_text, variant)
    ema = EMA(unet, ema_decay)
    unet.to(device)
    ema.module.to(device)
    text_encoder.to(device)
    latents = latents.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    ckpt = Checkpoint(work / stage)
    start = ckpt.load({"model": unet, "ema": ema.module}, opt)
    unet.train()
    bar = tqdm(range(start, steps), desc=stage, initial=start, total=steps, disable=not progress)
    for step in bar:
        idx = batch_indices(len(data), batch_size, step, seed + 2)
        gen = step_generator(seed, step)
        z0 = latents[torch.from_numpy(idx).to(device)]
        batch_ids = ids[idx].clone()
        drop = torch.rand(batch_size, generator=gen) < p_uncond
        batch_ids[drop] = empty
        with torch.no_grad():
            ctx = text_encoder(batch_ids.to(device))[0]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        weights = min_snr_weights(scheduler.alphas_cumprod, t, snr_gamma, prediction_type).to(device)
        noise, t = noise.to(device), t.to(device)
        zt = scheduler.add_noise(z0, noise, t)
        target = scheduler.get_velocity(z0, noise, t) if prediction_type == "v_prediction" else noise
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=min(100, steps // 10))
        per_sample = (unet(zt, t, ctx).sample - target).pow(2).mean(dim=(1, 2, 3))
        loss = (weights * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        if step % 10 == 0 or step == steps - 1:  # .item() waits for the device
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt.due() or step == steps - 1:
            ckpt.save(step + 1, {"model": unet, "ema": ema.module}, opt)
    final = work / stage / "final"
    ema.module.to("cpu").save_pretrained(final, safe_serialization=True)
    (final / "objective.json").write_text(json.dumps({"prediction_type": prediction_type, "zero_snr": zero_snr}))
    return ema.module

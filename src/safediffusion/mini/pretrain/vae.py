"""Pretraining of the tiny VAE (``AutoencoderKL``, 32x32x3 <-> 16x16x4) on rendered images.

Loss: ``||D(z) - x||^2 + beta KL(q(z|x) || N(0, I))`` with ``z ~ q(z|x)``, ``x`` in [-1, 1],
``beta = 1e-6`` (as SD's VAE). Afterwards ``scaling_factor = 1 / std(mean of q(z|x))`` over 2048 images,
so the diffusion model sees latents of unit standard deviation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from safediffusion.mini.architectures import build_vae
from safediffusion.mini.data import PairDataset
from safediffusion.mini.pretrain.common import Checkpoint, batch_indices, cosine_lr, step_generator
from safediffusion.mini.render import to_tensor


def train_vae(data: PairDataset, workdir: str | Path, steps: int = 700, batch_size: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0, progress: bool = True):
    """Train (or resume) the VAE; returns it with ``scaling_factor`` set and writes ``<workdir>/vae/final``."""
    torch.manual_seed(seed)
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    ckpt = Checkpoint(Path(workdir) / "vae")
    start = ckpt.load({"model": vae}, opt)
    vae.train()
    bar = tqdm(range(start, steps), desc="vae", initial=start, total=steps, disable=not progress)
    for step in bar:
        idx = batch_indices(len(data), batch_size, step, seed + 1)
        x = to_tensor(data.images[idx]) * 2 - 1
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=min(50, steps // 10))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=step_generator(seed, step))
        rec = vae.decode(z).sample
        mse = (rec - x).pow(2).mean()
        loss = mse + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(mse=f"{mse.item():.4f}")
        if ckpt.due() or step == steps - 1:
            ckpt.save(step + 1, {"model": vae}, opt)
    vae.eval()
    with torch.no_grad():
        x = to_tensor(data.images[:2048]) * 2 - 1
        means = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    vae.save_pretrained(Path(workdir) / "vae" / "final", safe_serialization=True)
    return vae

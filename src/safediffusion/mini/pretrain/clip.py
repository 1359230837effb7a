"""Contrastive pretraining of the tiny CLIP on rendered caption-image pairs.

Loss: CLIP's symmetric InfoNCE, ``L = (CE(s * T I^T, diag) + CE(s * I T^T, diag)) / 2`` over a batch of
unit-norm text/image embeddings with the learned temperature ``s``. Images get light Gaussian colour noise
(``sigma ~ U(0, 0.06)``, half the batch) so features stay stable on generated images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from safediffusion.mini.architectures import build_clip
from safediffusion.mini.clip import preprocess, write_preprocessor_config
from safediffusion.mini.data import PairDataset
from safediffusion.mini.pretrain.common import Checkpoint, batch_indices, cosine_lr, step_generator
from safediffusion.mini.render import to_tensor
from safediffusion.mini.tokenizer import build_mini_tokenizer


def augment(images: torch.Tensor, gen: torch.Generator, max_sigma: float = 0.06) -> torch.Tensor:
    """Add ``N(0, sigma^2)`` noise, ``sigma ~ U(0, max_sigma)`` per image, to a random half of the batch."""
    b = images.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=gen) * max_sigma * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    return (images + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def train_clip(data: PairDataset, workdir: str | Path, steps: int = 2000, batch_size: int = 128,
               lr: float = 1e-3, seed: int = 0, progress: bool = True):
    """Train (or resume) the tiny CLIP; returns ``(model, tokenizer)`` and writes ``<workdir>/clip/final``."""
    tokenizer = build_mini_tokenizer()
    torch.manual_seed(seed)
    model = build_clip(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    ckpt = Checkpoint(Path(workdir) / "clip")
    start = ckpt.load({"model": model}, opt)
    all_ids = tokenizer(list(data.captions), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
    model.train()
    bar = tqdm(range(start, steps), desc="clip", initial=start, total=steps, disable=not progress)
    for step in bar:
        idx = batch_indices(len(data), batch_size, step, seed)
        gen = step_generator(seed, step)
        pixels = preprocess(augment(to_tensor(data.images[idx]), gen))
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=min(100, steps // 10))
        out = model(input_ids=all_ids[idx], pixel_values=pixels, return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        bar.set_postfix(loss=f"{out.loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        if ckpt.due() or step == steps - 1:
            ckpt.save(step + 1, {"model": model}, opt)
    model.eval()
    final = Path(workdir) / "clip" / "final"
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    write_preprocessor_config(final)
    return model, tokenizer

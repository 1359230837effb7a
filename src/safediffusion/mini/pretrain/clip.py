"""Contrastive pretraining of the tiny CLIPs on rendered caption-image pairs.

Loss: CLIP's symmetric InfoNCE, ``L = (CE(s * T I^T, diag) + CE(s * I T^T, diag)) / 2`` over a batch of
unit-norm text/image embeddings with the temperature ``s``. Images get light Gaussian colour noise
(``sigma ~ U(0, 0.06)``, half the batch) so features stay stable on generated images.

Two models are trained this way:

* the generator's CLIP (stage ``clip``; its text tower conditions the UNet): complete captions, ``s``
  learned (clamped at 100);
* the reward CLIP (stage ``reward_clip``), a separate model as HPSv2 is in the paper: trained on partial,
  alt-text-like captions (:func:`~safediffusion.mini.captions.alt_text`) with ``s`` fixed at 100, where real
  CLIP's learned scale ends up (its clamp; :data:`REWARD_LOGIT_SCALE`). A soft temperature inflates every
  cosine gap; at 100 the loss is met by gaps of a few hundredths, as in real CLIP.
"""

from __future__ import annotations

import math
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


#: The reward CLIP's temperature schedule ``(s_0, s_end, ramp)``: fixed at real CLIP's clamp, 100. A ramp
#: from CLIP's initial ``1 / 0.07`` (``(1 / 0.07, 100.0, 0.3)``) was measured too and not kept: the text
#: embeddings it spreads at low scale fall back into a narrow cone once the scale reaches 100
#: (docs/miniature_world.md, "World acceptance criteria").
REWARD_LOGIT_SCALE = (100.0, 100.0, 0.0)


def scheduled_logit_scale(step: int, steps: int, schedule: tuple[float, float, float]) -> float:
    """``s_t = s_0 (s_end / s_0)^min(1, t / (ramp * steps))`` (``s_end`` throughout when ``ramp = 0``)."""
    start, end, ramp = schedule
    t = 1.0 if ramp <= 0 else min(1.0, step / (ramp * steps))
    return math.exp(math.log(start) + t * (math.log(end) - math.log(start)))


def train_clip(data: PairDataset, workdir: str | Path, steps: int = 2000, batch_size: int = 128,
               lr: float = 1e-3, seed: int = 0, progress: bool = True, stage: str = "clip",
               alt_captions: bool = False, logit_scale_schedule: tuple[float, float, float] | None = None):
    """Train (or resume) a tiny CLIP; returns ``(model, tokenizer)`` and writes ``<workdir>/<stage>/final``.

    ``alt_captions``: train on ``data.alt_captions`` instead of the complete captions;
    ``logit_scale_schedule``: ``(s_0, s_end, ramp)`` of :func:`scheduled_logit_scale` instead of a learned
    ``s`` (see module doc).
    """
    tokenizer = build_mini_tokenizer()
    torch.manual_seed(seed)
    model = build_clip(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    if logit_scale_schedule is not None:
        model.logit_scale.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    ckpt = Checkpoint(Path(workdir) / stage)
    start = ckpt.load({"model": model}, opt)
    texts = data.alt_captions if alt_captions else data.captions
    all_ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
    model.train()
    bar = tqdm(range(start, steps), desc=stage, initial=start, total=steps, disable=not progress)
    for step in bar:
        idx = batch_indices(len(data), batch_size, step, seed)
        gen = step_generator(seed, step)
        pixels = preprocess(augment(to_tensor(data.images[idx]), gen))
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup=min(100, steps // 10))
        if logit_scale_schedule is not None:
            with torch.no_grad():
                model.logit_scale.fill_(math.log(scheduled_logit_scale(step, steps, logit_scale_schedule)))
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
    if logit_scale_schedule is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(scheduled_logit_scale(steps, steps, logit_scale_schedule)))
    model.eval()
    final = Path(workdir) / stage / "final"
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    write_preprocessor_config(final)
    return model, tokenizer

"""Classifier-free guidance (Ho & Salimans, arXiv:2207.12598) in one batched UNet call.

    eps = eps_u + w * (eps_c - eps_u),    eps_c = eps(x_t, t, c),  eps_u = eps(x_t, t, c_uncond)

The unconditional and conditional halves run as one batch ``[2B]`` (uncond first, as in diffusers'
``StableDiffusionPipeline``), which halves the number of UNet launches compared with two calls.
"""

from __future__ import annotations

import torch


def guided_noise_pred(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timestep: int | torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """The UNet's (guided) prediction ``[B, C, h, w]`` for ``latents`` ``[B, C, h, w]`` at ``timestep``.

    Args:
        unet: a ``UNet2DConditionModel`` (possibly wrapped by accelerate/DDP or peft).
        latents: ``x_t`` ``[B, C, h, w]`` in the UNet's dtype (DDIM's ``scale_model_input`` is the identity).
        timestep: an int, a 0-dim tensor, or a long tensor ``[B]`` (one per sample).
        cond_embeds: text-encoder states ``[B, L, D]``.
        uncond_embeds: unconditional (negative-prompt) states ``[B, L, D]`` or ``[1, L, D]`` (broadcast), or
            ``None`` for no guidance.
        guidance_scale: ``w``. ``w <= 1`` or ``uncond_embeds is None`` gives one plain conditional call (for
            ``w == 1`` the guided formula reduces to ``eps_c`` anyway).

    Returns:
        ``eps_u + w (eps_c - eps_u)``, or ``eps_c`` without guidance (the raw model output for
        ``v_prediction``/``sample`` models; guidance is linear so it applies the same way).
    """
    if uncond_embeds is None or guidance_scale <= 1.0:
        return unet(latents, timestep, encoder_hidden_states=cond_embeds, return_dict=False)[0]
    batch = latents.shape[0]
    if uncond_embeds.shape[0] == 1 and batch != 1:
        uncond_embeds = uncond_embeds.expand(batch, *uncond_embeds.shape[1:])
    if isinstance(timestep, torch.Tensor) and timestep.ndim == 1:
        timestep = torch.cat([timestep, timestep])
    model_input = torch.cat([latents, latents])
    embeds = torch.cat([uncond_embeds, cond_embeds])
    pred = unet(model_input, timestep, encoder_hidden_states=embeds, return_dict=False)[0]
    pred_uncond, pred_cond = pred.chunk(2)
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)

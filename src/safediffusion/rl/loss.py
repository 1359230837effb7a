"""PPO-clip objective on per-step transition log-probabilities, and the Gaussian KL to a reference policy.

With ratio ``rho = exp(log p_theta(x_{t-1}|x_t) - log p_old(x_{t-1}|x_t))`` and advantage ``A`` (per sample):

    L_clip = mean( max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)) )

Both DDIM transitions of the policy and the reference share the same std ``sigma_t``, so their KL is

    KL(N(mu, sigma^2) || N(mu_ref, sigma^2)) = ||mu - mu_ref||^2 / (2 sigma^2)

(averaged over dimensions, like the log-probabilities).
"""

from __future__ import annotations

import torch


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                  clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``[B]`` tensors -> (scalar loss, stats: approx_kl, clipfrac, ratio mean)."""
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            # Schulman's low-variance estimator of KL(old || new): E[(rho - 1) - log rho]
            "approx_kl": ((ratio - 1) - log_ratio).mean(),
            "clipfrac": (torch.abs(ratio - 1.0) > clip_range).float().mean(),
            "ratio": ratio.mean(),
        }
    return loss, stats


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between two Gaussians of equal std; ``mean, ref_mean [B, ...]``, ``std`` broadcastable -> ``[B]``."""
    kl = (mean - ref_mean) ** 2 / (2 * std**2)
    return kl.mean(dim=tuple(range(1, kl.ndim)))

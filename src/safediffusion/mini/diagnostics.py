"""Within-group diagnostics of a GRPO reward: does it rank marker-free images above marker images?

GRPO learns only from differences inside a group of ``G`` samples of one prompt, so a reward helps the
policy drop a marker only in groups that hold both kinds of image, and only if it ranks the clean ones
higher there. Used by ``scripts/dev/mini/reward_diagnostics.py``.
"""

from __future__ import annotations

import torch


def group_stats(rewards: torch.Tensor, marker: torch.Tensor, group_size: int, adv_clip: float = 2.5) -> dict:
    """Separation of clean vs marker images inside groups.

    Args:
        rewards: ``[N * G]`` rewards, sample ``i`` in group ``i // G``.
        marker: ``[N * G]`` bool, the detector's verdict per sample.
        group_size: ``G``.
        adv_clip: GRPO's advantage clip.

    Returns:
        ``mixed_groups``: fraction of groups with both clean and marker samples; over those groups,
        ``gap`` = mean of ``mean r(clean) - mean r(marker)``, ``adv_gap`` the same for the advantages
        ``clip((r - mean_g) / (std_g + 1e-4), +-adv_clip)``, ``auc`` = P(r(clean) > r(marker)) over same-group
        pairs (ties count 1/2); ``within_group_std``: mean over all groups of the reward's std.
    """
    r = rewards.view(-1, group_size)
    m = marker.view(-1, group_size)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).clamp(-adv_clip, adv_clip)
    gaps, adv_gaps, wins, pairs = [], [], 0.0, 0
    for k in range(r.shape[0]):
        clean, dirty = r[k][~m[k]], r[k][m[k]]
        if len(clean) == 0 or len(dirty) == 0:
            continue
        gaps.append(float(clean.mean() - dirty.mean()))
        adv_gaps.append(float(adv[k][~m[k]].mean() - adv[k][m[k]].mean()))
        diff = clean[:, None] - dirty[None, :]
        wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        pairs += diff.numel()
    return {"mixed_groups": len(gaps) / r.shape[0],
            "gap": sum(gaps) / len(gaps) if gaps else float("nan"),
            "adv_gap": sum(adv_gaps) / len(adv_gaps) if adv_gaps else float("nan"),
            "auc": wins / pairs if pairs else float("nan"),
            "within_group_std": float(r.std(1).mean())}

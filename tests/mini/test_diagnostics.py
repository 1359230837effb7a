import math

import torch

from safediffusion.mini.diagnostics import group_stats


def test_group_stats_perfect_and_blind_rewards():
    marker = torch.tensor([True, False, True, False, True, True, True, True])  # group 2 is all marker
    ranks_clean_higher = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.5, 0.4, 0.3, 0.2])
    s = group_stats(ranks_clean_higher, marker, group_size=4)
    assert s["mixed_groups"] == 0.5
    assert s["auc"] == 1.0
    assert math.isclose(s["gap"], 0.7, rel_tol=1e-6)
    assert s["adv_gap"] > 0

    inverted = group_stats(-ranks_clean_higher, marker, group_size=4)
    assert inverted["auc"] == 0.0 and inverted["gap"] < 0

    constant = group_stats(torch.full((8,), 0.3), marker, group_size=4)
    assert constant["auc"] == 0.5 and constant["gap"] == 0.0 and constant["within_group_std"] == 0.0


def test_group_stats_without_mixed_groups_is_nan():
    s = group_stats(torch.rand(8), torch.zeros(8, dtype=torch.bool), group_size=4)
    assert s["mixed_groups"] == 0.0 and math.isnan(s["auc"]) and math.isnan(s["gap"])

import numpy as np
import pytest
import torch

from safediffusion.rl.advantages import PerPromptStatTracker, group_advantages
from safediffusion.rl.loss import gaussian_kl, ppo_clip_loss


def test_group_advantages_match_hand_computation():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 10.0, 14.0])
    adv = group_advantages(rewards, group_size=4, eps=0.0, clip_max=100.0)
    g1 = np.array([1.0, 2.0, 3.0, 10.0])
    g2 = np.array([10.0, 10.0, 10.0, 14.0])
    expected = np.concatenate([(g1 - g1.mean()) / g1.std(), (g2 - g2.mean()) / g2.std()])
    assert np.allclose(adv.numpy(), expected, atol=1e-6)


def test_group_advantages_clip_and_constant_group():
    rewards = torch.tensor([0.0] * 15 + [1.0] + [5.0] * 16)
    adv = group_advantages(rewards, group_size=16, eps=1e-4, clip_max=2.5)
    assert adv.max() == pytest.approx(2.5)  # the outlier's z-score is sqrt(15) ~ 3.87 before clipping
    assert torch.all(adv[16:] == 0)  # a constant group has no signal
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(6), group_size=4)


def test_stat_tracker_uses_history_once_full():
    tracker = PerPromptStatTracker(buffer_size=8, min_count=4)
    first = tracker.update(["a", "a", "b", "b"], np.array([1.0, 3.0, 0.0, 0.0]), eps=0.0)
    # before min_count: batch-global statistics
    glob = np.array([1.0, 3.0, 0.0, 0.0])
    assert np.allclose(first, (glob - glob.mean()) / glob.std())
    second = tracker.update(["a", "a"], np.array([5.0, 7.0]), eps=0.0)
    hist = np.array([1.0, 3.0, 5.0, 7.0])
    assert np.allclose(second, np.clip((np.array([5.0, 7.0]) - hist.mean()) / hist.std(), -2.5, 2.5))
    state = tracker.state_dict()
    other = PerPromptStatTracker()
    other.load_state_dict(state)
    assert other.state_dict() == state


def test_ppo_clip_loss():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    new = torch.tensor([0.0, 0.0, 0.5, 0.5], requires_grad=True)
    loss, stats = ppo_clip_loss(new, old, adv, clip_range=0.1)
    ratio = torch.exp(new.detach())
    expected = torch.stack([-adv * ratio, -adv * ratio.clamp(0.9, 1.1)]).max(0).values.mean()
    assert loss.item() == pytest.approx(expected.item())
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    # sample 2 (A>0, ratio above the clip) gets no gradient; sample 3 (A<0, ratio up) keeps its gradient
    assert new.grad[2] == 0 and new.grad[3] != 0
    # at ratio 1 the loss gradient is -A / B
    assert torch.allclose(new.grad[:2], -adv[:2] / 4)


def test_gaussian_kl():
    mean = torch.zeros(2, 3)
    ref = torch.ones(2, 3)
    kl = gaussian_kl(mean, ref, torch.tensor(2.0))
    assert torch.allclose(kl, torch.full((2,), 1 / 8))

"""configs/sd15-paper.yaml is the reference code's recipe (MAXNORM8650/SafeDiffusion-R1, fastvideo/train.py with
scripts/run_train.sh and config/base.py), checked through the trainer's own functions."""

from pathlib import Path

import torch

from safediffusion.config import load_config
from safediffusion.rl.advantages import group_advantages
from safediffusion.rl.trainer import sample_order, timestep_order, updates_per_epoch, window_steps

PAPER = load_config(Path(__file__).resolve().parents[2] / "configs" / "sd15-paper.yaml")


def test_sixteen_optimizer_steps_per_epoch_on_minibatches_of_four():
    tc = PAPER.train
    B = tc.prompts_per_epoch * tc.group_size
    assert (tc.prompts_per_epoch, tc.group_size, B) == (4, 16, 64)
    assert tc.train_batch_size == 4 and tc.gradient_accumulation_steps == 1 and tc.inner_epochs == 1
    assert updates_per_epoch(PAPER) == 16
    # the reference does not shuffle along the batch: minibatch i holds samples 4i..4i+3 (a quarter of a group)
    order = sample_order(PAPER, B, torch.Generator().manual_seed(0))
    minibatches = order.view(-1, tc.train_batch_size)
    assert minibatches.tolist() == [[4 * i + k for k in range(4)] for i in range(16)]


def test_the_first_49_of_50_steps_shuffled_per_sample():
    assert PAPER.sampling.num_steps == 50
    W, K = window_steps(PAPER)
    assert (W, K) == (50, 49)
    steps = timestep_order(PAPER, 64, W, K, torch.Generator().manual_seed(0))
    assert steps.shape == (64, 49)
    assert all(sorted(row) == list(range(49)) for row in steps.tolist())  # every step but the last (index 49)
    assert len({tuple(row) for row in steps.tolist()}) == 64  # each sample in its own order
    # the other choice, a random 49 of the 50, leaves out a different step per sample
    random = load_config(None, ["sampling.num_steps=50", "train.timestep_fraction=0.98"])
    left_out = {(set(range(50)) - set(row)).pop()
                for row in timestep_order(random, 64, 50, 49, torch.Generator().manual_seed(0)).tolist()}
    assert len(left_out) > 1


def test_advantages_are_the_reference_formula():
    """(r - mean) / (std + 1e-8) with torch's unbiased std per group of 16, clamped to +-2.5 in the update."""
    tc = PAPER.train
    assert (tc.adv_std, tc.adv_eps, tc.adv_clip_max) == ("unbiased", 1e-8, 2.5)
    rewards = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 0.01 + 0.3
    ours = group_advantages(rewards, tc.group_size, tc.adv_eps, tc.adv_clip_max, unbiased=tc.adv_std == "unbiased")
    reference = torch.zeros_like(rewards)
    for i in range(4):
        group = rewards[i * 16:(i + 1) * 16]
        reference[i * 16:(i + 1) * 16] = (group - group.mean()) / (group.std() + 1e-8)
    torch.testing.assert_close(ours, reference.clamp(-2.5, 2.5))
    population = group_advantages(rewards, tc.group_size, 1e-4, 2.5)
    assert not torch.allclose(ours, population, atol=1e-3)  # the choice matters: sqrt(16 / 15) - 1 = 3%


def test_rollout_and_update_run_the_unet_on_one_batch_shape():
    """Rollout chunks of 4 samples and minibatches of 4, both with CFG: the UNet sees [8, 4, 64, 64] in both, so
    under bf16 the first PPO ratio is 1 (as in the reference, which samples in chunks of train.batch_size)."""
    tc = PAPER.train
    assert tc.sample_batch_size == tc.train_batch_size == 4 and tc.cfg_in_training
    assert (tc.prompts_per_epoch * tc.group_size) % tc.sample_batch_size == 0  # no smaller last chunk


def test_the_remaining_numbers():
    tc, sc = PAPER.train, PAPER.sampling
    assert (sc.eta, sc.guidance_scale, sc.shared_noise_per_group) == (1.0, 5.0, True)
    assert (tc.clip_range, tc.kl_beta, tc.learning_rate, tc.weight_decay) == (1e-4, 0.0, 1e-5, 1e-4)
    assert (tc.adam_beta1, tc.adam_beta2, tc.adam_eps, tc.max_grad_norm) == (0.9, 0.999, 1e-8, 1.0)
    assert (tc.mixed_precision, tc.epochs, PAPER.model.use_lora) == ("bf16", 300, False)
    assert (PAPER.reward.alpha, PAPER.reward.mode) == (0.5, "all")

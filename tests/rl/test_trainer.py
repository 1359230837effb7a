"""End-to-end GRPO on tiny random models: outputs, loading with plain diffusers, exact resume, LoRA, KL."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safediffusion.cli import main
from safediffusion.config import load_config
from safediffusion.rl.trainer import GRPOTrainer

TINY = ["train.epochs=3"]


def _unet_weights(final: Path) -> dict[str, torch.Tensor]:
    return load_file(str(final / "unet" / "diffusion_pytorch_model.safetensors"))


def test_outputs(tiny_run):
    metrics = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        for key in ("reward_mean", "reward_std", "reward_group_std", "approx_kl", "clipfrac", "loss", "grad_norm"):
            assert key in m
        assert m["num_rewards"] == 2 * 4
    info = json.loads((tiny_run / "run_info.json").read_text())
    assert info["reward"]["alpha"] == 0.5
    assert len(info["reward_artifacts"]["v_safe"]) == 32
    v = load_file(str(tiny_run / "reward" / "reward_artifacts.safetensors"))["v_safe"]
    assert torch.allclose(v.norm(), torch.tensor(1.0), atol=1e-5)
    assert (tiny_run / "config.yaml").is_file()
    assert sorted(p.name for p in (tiny_run / "samples").glob("*.png"))
    assert list((tiny_run / "logs").rglob("events.out.tfevents*"))
    assert (tiny_run / "checkpoints").is_dir()


def test_final_loads_with_plain_diffusers(tiny_run):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_run / "final")
    out = pipe("a red apple", num_inference_steps=2, height=16, width=16, output_type="pt")
    assert out.images.shape == (1, 3, 16, 16)


def test_weights_changed(tiny_run):
    from safediffusion.models.tiny import build_tiny_bundle

    base = build_tiny_bundle(seed=0).unet.state_dict()
    trained = _unet_weights(tiny_run / "final")
    diffs = [float((trained[k] - base[k]).abs().max()) for k in trained]
    assert max(diffs) > 0


def test_first_ratio_is_one(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    batch = trainer._rollout(0)
    rollout = batch["rollout"]
    t = rollout.timesteps
    with torch.no_grad():
        lp, _, _ = trainer._transition(trainer.unet, rollout.latents[:, 0], rollout.next_latents[:, 0],
                                       t[:1].expand(rollout.batch_size), batch["cond"])
    assert torch.equal(lp, rollout.log_probs[:, 0])  # bit-exact: the update recomputes the rollout's math


def test_first_micro_step_is_on_policy_every_epoch(tiny_run):
    """metrics.jsonl's on-policy check. tiny.yaml samples in chunks of 8 and trains on shuffled minibatches of 4:
    other GEMM shapes and row positions round differently even in float32 on a CPU (~1e-7 here), far inside the
    1e-4 clip range; test_paper_recipe_options_end_to_end has the exact case."""
    metrics = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for m in metrics:
        assert m["first_log_ratio_max_abs"] < 1e-6 and m["first_clipfrac"] == 0.0
        assert m["first_ratio_max_abs_dev"] < 1e-6
        assert m["clipfrac"] > 0  # later micro-steps, after optimizer steps, do move the ratio


def test_first_ratio_check_measures_an_off_policy_rollout(tmp_path):
    """The check is not vacuous: old log-probs off by 1e-3 (10x the clip range) show up as such."""
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    batch = trainer._rollout(0)
    batch["rollout"].log_probs.sub_(1e-3)
    stats = trainer._update(0, batch, torch.linspace(-1, 1, batch["rewards"].numel()))
    assert stats["first_log_ratio_max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert stats["first_ratio_max_abs_dev"] == pytest.approx(math.expm1(1e-3), rel=1e-3)
    assert stats["first_clipfrac"] == 1.0


def test_paper_recipe_options_end_to_end(tmp_path):
    """sd15-paper's recipe options on the tiny model: rollout chunks = minibatches (4), minibatches in rollout
    order, the first K steps shuffled per sample, unbiased std + 1e-8, one x_T per group: one AdamW step per
    minibatch, and the first ratio exactly 1 (bit-exact log-ratio 0: every minibatch is one rollout chunk, so the
    UNet sees the same rows in the same batch positions and shape as in the rollout)."""
    from safediffusion.rl.trainer import updates_per_epoch

    cfg = load_config("configs/tiny.yaml", [
        "train.epochs=1", "logging.tensorboard=false", "logging.progress=false", "train.sample_batch_size=4",
        "train.train_batch_size=4", "train.shuffle_samples=false", "train.timestep_selection=first",
        "train.adv_std=unbiased", "train.adv_eps=1e-8", "sampling.shared_noise_per_group=true"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    steps = []
    step = trainer.optimizer.optimizer.step
    trainer.optimizer.optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    trainer.train()
    (m,) = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == m["global_step"] == updates_per_epoch(cfg) == 2  # 8 samples / 4
    assert (m["first_log_ratio_max_abs"], m["first_clipfrac"]) == (0.0, 0.0)


@pytest.mark.parametrize("window, touches_late_steps", [(0.5, False), (1.0, True)])
def test_timestep_window_trains_only_the_first_steps(tmp_path, window, touches_late_steps):
    """With ``train.timestep_window=0.5`` the update never reads the second half of the chain (poisoned here)."""
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false", "sampling.num_steps=4",
                                             "train.timestep_fraction=1.0", f"train.timestep_window={window}"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    assert (trainer.num_window_timesteps, trainer.num_train_timesteps) == ((2, 2) if window < 1 else (4, 4))
    batch = trainer._rollout(0)
    batch["rollout"].trajectory[:, 3:] = float("nan")  # x after step 2: read only by steps 2 and 3
    batch["rollout"].log_probs[:, 2:] = float("nan")
    advantages = torch.linspace(-1, 1, batch["rewards"].numel())
    stats = trainer._update(0, batch, advantages)
    # a NaN read from the poisoned steps makes the loss NaN, and the finite-value guard skips the update
    assert (stats["skipped_updates"] > 0) == touches_late_steps
    assert bool(torch.isfinite(torch.tensor(stats["loss"]))) != touches_late_steps
    assert all(torch.isfinite(p).all() for p in trainer.params)


def test_resume_continues_to_identical_weights(tmp_path, tiny_run):
    """A run stopped after epoch 2 and re-run to epoch 3 equals the uninterrupted 3-epoch run."""
    out = tmp_path / "r"
    assert main(["train", "--config", "tiny", "--output-dir", str(out), "train.epochs=2"]) == 0
    assert main(["train", "--config", "tiny", "--output-dir", str(out), "train.epochs=3"]) == 0
    a, b = _unet_weights(tiny_run / "final"), _unet_weights(out / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_resume_refuses_a_different_config(tmp_path, capsys, tiny_run):
    code = main(["train", "--config", "tiny", "--output-dir", str(tiny_run), "reward.alpha=0.9"])
    assert code == 2
    assert "different config" in capsys.readouterr().err


def test_lora_with_kl(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "lora"
    args = ["train.epochs=2", "model.use_lora=true", "model.lora_rank=4", "train.kl_beta=0.1",
            "train.learning_rate=1e-3", "logging.tensorboard=false"]
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *args]) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["kl"] > 0  # the adapter moved the policy away from the base
    assert metrics[0]["kl"] < metrics[-1]["kl"] or metrics[0]["kl"] == pytest.approx(0, abs=1e-12)
    assert (out / "final" / "pytorch_lora_weights.safetensors").is_file()
    from safediffusion.models.tiny import save_tiny_pipeline

    base = save_tiny_pipeline(tmp_path / "base")
    pipe = StableDiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(out / "final")
    img = pipe("a cat", num_inference_steps=2, height=16, width=16, output_type="pt").images
    assert img.shape == (1, 3, 16, 16)
    # our own loader (generate / evaluate) resolves the base model and attaches the adapter
    from safediffusion.models.bundle import load_bundle

    bundle = load_bundle(str(out / "final"))
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 32)
    with torch.no_grad():
        assert torch.allclose(bundle.unet(x, t, ctx).sample, pipe.unet(x, t, ctx).sample, atol=1e-5)


def test_full_finetune_kl_uses_frozen_copy(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "train.kl_beta=0.5", "logging.tensorboard=false"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    assert trainer.ref_unet is not None
    assert not any(p.requires_grad for p in trainer.ref_unet.parameters())
    before = {k: v.clone() for k, v in trainer.ref_unet.state_dict().items()}
    trainer.train()
    after = trainer.ref_unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "kl" in metrics[0]


def test_bf16_gradient_checkpointing_and_accumulation(tmp_path):
    out = tmp_path / "bf16"
    args = ["train.epochs=1", "train.mixed_precision=bf16", "model.gradient_checkpointing=true",
            "train.gradient_accumulation_steps=2", "train.per_prompt_stat_tracking=true",
            "train.stat_tracking_min_count=2", "logging.tensorboard=false"]
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *args]) == 0
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # 8 samples in minibatches of 4 -> 2 minibatches, accumulated 2 at a time -> one optimizer step
    assert m["global_step"] == 1
    assert torch.isfinite(torch.tensor(m["loss"]))
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(out / "final" / "unet")
    assert next(unet.parameters()).dtype == torch.float32


def test_detector_reward_and_marker_rate_logging(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false", "reward.name=mini-detector",
                                            "logging.rollout_metrics=[marker_rate]"])
    GRPOTrainer(cfg, tmp_path / "r").train()
    record = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0.0 <= record["marker_rate"] <= 1.0
    assert {"marker_rate/benign", "marker_rate/unsafe"} <= set(record)
    # the oracle reward is 1 - 1[marker], so its mean and the logged marker rate must agree
    assert record["reward_mean"] == pytest.approx(1.0 - record["marker_rate"])


@pytest.mark.parametrize("batch_size, whole_groups", [(4, True), (8, True), (3, False)])
def test_minibatches_hold_whole_groups(tmp_path, batch_size, whole_groups):
    """train_batch_size a multiple of group_size (4 here): each minibatch is a set of complete groups."""
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false",
                                             f"train.train_batch_size={batch_size}", "train.prompts_per_epoch=4"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    B, G = 16, cfg.train.group_size
    orders = [trainer._sample_order(B, torch.Generator().manual_seed(s)) for s in range(5)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(B))
        chunks = [order[i:i + batch_size] for i in range(0, B, batch_size)]
        complete = all(set(Counter((c // G).tolist()).values()) == {G} for c in chunks)
        assert complete == whole_groups
    assert len({tuple(o.tolist()) for o in orders}) > 1, "the order is shuffled"


def test_deterministic_after_window(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["train.epochs=1", "logging.tensorboard=false", "sampling.num_steps=4",
                                             "train.timestep_fraction=1.0", "train.timestep_window=0.5",
                                             "train.deterministic_after_window=true"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    batch = trainer._rollout(0)
    lp = batch["rollout"].log_probs
    assert torch.equal(lp[:, 2:], torch.zeros_like(lp[:, 2:])) and (lp[:, :2] != 0).all()
    stats = trainer._update(0, batch, torch.linspace(-1, 1, batch["rewards"].numel()))
    assert stats["skipped_updates"] == 0 and math.isfinite(stats["loss"])

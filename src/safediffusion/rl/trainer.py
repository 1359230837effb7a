"""The GRPO recipe: online RL post-training of a diffusion UNet with a (steering) reward.

One epoch, per process (P = ``train.prompts_per_epoch`` prompts, G = ``train.group_size``, B = P*G, T = DDIM
steps, W = ``round(T * train.timestep_window)`` the first (noisiest) steps eligible for training,
K = ``int(W * train.timestep_fraction)``):

1. **Rollout.** B samples with DDIM (eta > 0) under CFG. Each step is a Gaussian transition
   ``p(x_{t-1} | x_t) = N(mu_theta(x_t, t, c), sigma_t^2 I)``; we keep ``x_t, x_{t-1}`` ``[B, T, C, h, w]`` and
   ``log p_old`` ``[B, T]``.
2. **Reward.** ``r [B]`` from the decoded images and the prompts (e.g. the steering reward
   ``cos(z_img, normalize(z_text + alpha * v_safe))``).
3. **Advantages.** ``A = clip((r - mean_group) / (std_group + eps), +-c)`` per prompt group (or per-prompt stats
   across epochs).
   ``std`` is the population or the unbiased (``train.adv_std``) standard deviation.
4. **Update.** For every sample, K of its first W transitions in a per-sample shuffled order: a random K of the W
   (``train.timestep_selection: random``) or the first K (``first``). The B samples are cut into minibatches of
   ``M = train.train_batch_size`` (shuffled, or in rollout order). For each minibatch and step ``j < K`` (a
   *micro-step*) the PPO-clip loss ``max(-A rho, -A clip(rho, 1-eps, 1+eps))`` with
   ``rho = exp(log p_theta - log p_old)``, plus ``beta * KL(p_theta || p_ref)`` (the frozen base: the LoRA
   adapter switched off, or a frozen copy of a fully fine-tuned UNet). The gradient of one optimizer step is the
   mean over its ``K * train.gradient_accumulation_steps`` micro-steps, so an epoch takes
   ``inner_epochs * ceil(ceil(B / M) / gradient_accumulation_steps)`` AdamW steps (the paper: 64 / 4 = 16), each
   after clipping the gradient norm of the parameters the optimizer holds to ``train.max_grad_norm``.

On-policy check: the first micro-step of an epoch runs before its first optimizer step, so ``rho`` must be 1;
``first_log_ratio_max_abs``, ``first_ratio_max_abs_dev`` (``max |rho - 1|``) and ``first_clipfrac`` in
``metrics.jsonl`` measure it. It is exactly 1 when every minibatch is one of the rollout's chunks
(``train.train_batch_size == train.sample_batch_size`` and minibatches not reshuffled across chunks:
``train.shuffle_samples: false``, or one whole group per minibatch), so that the UNet sees the same rows at the same
batch positions and shape as in the rollout. Otherwise GEMMs round differently: ~1e-7 in float32 on a CPU (tiny
config); under bf16 with CFG 5 it can be a sizeable part of a 1e-4 clip range (issue #15's estimate, not measured
on a GPU here).

Distributed backends (:func:`check_distributed_backend`): DDP and FSDP2 (``fully_shard``; the optimizer's
parameters are the sharded ones, and ``final/`` is written from the gathered full state dict). DeepSpeed and
FSDP1 are refused: accelerate's DeepSpeed ``backward`` steps the engine after every micro-step unless the
trainer drives accelerate's accumulation, which the GRPO update (with its skip of non-finite steps) does not.

Every random draw (prompts, initial noise, per-step noise, timestep order) is seeded by
``(seed, epoch, rank)``, so a run resumed from a checkpoint ends with the same weights as an uninterrupted one.

Failures (docs/training.md, "Runs and failures"): the output folder is locked while the run lives
(:mod:`~safediffusion.rl.run_lock`); an update with a non-finite reward, advantage, loss or gradient is skipped,
and ``train.max_nonfinite_epochs`` such epochs in a row stop the run (exit 3) with no checkpoint or ``final/``
from those epochs; resuming falls back past checkpoints that do not load; SIGTERM / SIGUSR1 finish the epoch,
write a checkpoint and exit 75 (:mod:`~safediffusion.rl.preemption`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from safediffusion.config import Config, save_config
from safediffusion.data.mixer import PromptMixer, build_prompt_mixer
from safediffusion.errors import TrainingDiverged, UserError, first_line
from safediffusion.models.bundle import ModelBundle, load_bundle, lora_metadata
from safediffusion.registry import ROLLOUT_METRICS
from safediffusion.rewards import build_reward
from safediffusion.rewards.build import reward_entries
from safediffusion.rl.advantages import PerPromptStatTracker, group_advantages
from safediffusion.rl.checkpoint import (
    CHECKPOINT_LOAD_ERRORS,
    is_out_of_memory,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    move_aside,
    save_checkpoint,
)
from safediffusion.rl.loss import gaussian_kl, ppo_clip_loss
from safediffusion.rl.preemption import Preempted, PreemptionHandler
from safediffusion.rl.run_files import (
    MetricsWriter,
    check_resume_compatible,
    save_image_grid,
    write_run_info,
)
from safediffusion.rl.run_lock import RunLock, check_unlocked
from safediffusion.rl.transition import policy_transition
from safediffusion.sampling.rollout import make_initial_latents, sample_rollout

_RESUME_IGNORED_KEYS = ("train.epochs", "train.checkpoint_every", "train.keep_checkpoints",
                        "train.max_nonfinite_epochs", "logging", "eval")


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def window_steps(cfg: Config) -> tuple[int, int]:
    """``(W, K)``: the first ``W = round(T * timestep_window)`` steps are eligible for training, and
    ``K = int(W * timestep_fraction)`` of them are trained per sample and epoch (``T = sampling.num_steps``)."""
    W = max(1, round(cfg.sampling.num_steps * cfg.train.timestep_window))
    return W, max(1, int(W * cfg.train.timestep_fraction))


def updates_per_epoch(cfg: Config) -> int:
    """AdamW steps per epoch and process: ``inner_epochs * ceil(ceil(B / M) / gradient_accumulation_steps)``
    with ``B = prompts_per_epoch * group_size`` samples and minibatches of ``M = train_batch_size``; each step
    accumulates ``K`` micro-steps (one per trained timestep) of each of its minibatches."""
    tc = cfg.train
    minibatches = math.ceil(tc.prompts_per_epoch * tc.group_size / tc.train_batch_size)
    return tc.inner_epochs * math.ceil(minibatches / tc.gradient_accumulation_steps)


def sample_order(cfg: Config, B: int, gen: torch.Generator) -> torch.Tensor:
    """The order ``[B]`` in which the samples are cut into minibatches of ``train_batch_size``.

    ``train.shuffle_samples: false``: rollout order (the paper's code: consecutive samples, i.e. parts of one
    group, per minibatch). Otherwise a permutation; when ``train_batch_size`` is a multiple of ``group_size``
    whole groups are shuffled, so every optimizer step sees complete groups, whose advantages sum to zero (as
    Flow-GRPO batches them).
    """
    G, mb = cfg.train.group_size, cfg.train.train_batch_size
    if not cfg.train.shuffle_samples:
        return torch.arange(B)
    if mb % G or B % G:
        return torch.randperm(B, generator=gen)
    groups = torch.randperm(B // G, generator=gen)
    return (groups[:, None] * G + torch.arange(G)).reshape(-1)


def timestep_order(cfg: Config, B: int, W: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """``[B, K]`` step indices, each row (sample) in its own random order: a random ``K`` of the first ``W`` steps
    (``train.timestep_selection: random``) or the first ``K`` steps (``first``; the paper's code trains steps
    ``0..48`` of 50, never the last). Micro-step ``j`` of a minibatch trains step ``steps[i, j]`` of sample ``i``."""
    pool = K if cfg.train.timestep_selection == "first" else W
    return torch.stack([torch.randperm(pool, generator=gen)[:K] for _ in range(B)])


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2 parameters and gradients), a plain tensor as it is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _full_float(t: torch.Tensor | float) -> float:
    """A scalar as a float; a DTensor (e.g. FSDP2's total grad norm) is first gathered (collective)."""
    full = getattr(t, "full_tensor", None)
    return float(full() if callable(full) else t)


_SUPPORTED = "launch with configs/accelerate/multi_gpu.yaml (DDP) or configs/accelerate/fsdp.yaml (FSDP2)"


def check_distributed_backend(accelerator: Accelerator | None = None) -> None:
    """Raise :class:`UserError` (one line, exit 2) for a backend the GRPO update does not run correctly.

    Without ``accelerator`` the check reads what ``accelerate launch`` put in the environment, before an
    ``Accelerator`` (which would import DeepSpeed) is built.

    - **DeepSpeed** is refused. Its engine owns the optimizer step: accelerate's ``backward`` calls
      ``engine.step()`` whenever ``sync_gradients`` holds, which is after every micro-step unless the loop runs
      inside ``accelerator.accumulate`` with the engine's ``gradient_accumulation_steps`` equal to the micro-steps
      per update; ``no_sync`` does nothing for ZeRO >= 2, the wrapped optimizer's ``step`` / ``zero_grad`` are
      no-ops, and the clip norm comes from the DeepSpeed config. A run would take ``K`` AdamW steps per minibatch
      (49 x 32 per epoch with the old paper config) and report nothing wrong.
    - **FSDP version 1** is refused (FSDP2, ``fsdp_version: 2``, is supported and tested).
    - **Megatron-LM** is refused.
    """
    if accelerator is None:
        env = os.environ
        if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            kind, version = DistributedType.DEEPSPEED, None
        elif env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            kind, version = DistributedType.FSDP, int(env.get("FSDP_VERSION", "1"))
        elif env.get("ACCELERATE_USE_MEGATRON_LM", "false").lower() == "true":
            kind, version = DistributedType.MEGATRON_LM, None
        else:
            return
    else:
        kind = accelerator.distributed_type
        version = 2 if kind == DistributedType.FSDP and accelerator.is_fsdp2 else 1
    if kind == DistributedType.DEEPSPEED:
        raise UserError("DeepSpeed is not supported by 'safediffusion train' (its engine would take an optimizer "
                        "step after every timestep of the GRPO update)", _SUPPORTED)
    if kind == DistributedType.FSDP and version != 2:
        raise UserError("FSDP version 1 is not supported by 'safediffusion train'",
                        "set fsdp_version: 2 in the accelerate config, as configs/accelerate/fsdp.yaml does")
    if kind == DistributedType.MEGATRON_LM:
        raise UserError("Megatron-LM is not supported by 'safediffusion train'", _SUPPORTED)


class GRPOTrainer:
    """Build with a validated :class:`Config`; :meth:`train` runs (or resumes) and returns ``OUTPUT/final``.

    All input checks (prompts, model, reward encoder, resume compatibility) happen in the constructor,
    before anything is written to ``output_dir``.
    """

    def __init__(self, cfg: Config, output_dir: str | Path, accelerator: Accelerator | None = None) -> None:
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        check_distributed_backend(accelerator)  # before an Accelerator (and DeepSpeed) is built
        check_unlocked(self.output_dir)  # fail fast; train() takes the lock
        tc = cfg.train
        self.prompts: PromptMixer = build_prompt_mixer(cfg.data, cfg.seed, cfg.resolve_path)
        reward_entries(cfg.reward)  # unknown reward or metric names fail here, before any model is loaded
        for name in cfg.logging.rollout_metrics:
            ROLLOUT_METRICS.get(name)
        if self.output_dir.exists() and any(self.output_dir.iterdir()):
            check_resume_compatible(self.output_dir, cfg, _RESUME_IGNORED_KEYS)

        self.accelerator = accelerator or Accelerator(
            mixed_precision=tc.mixed_precision,
            cpu=not torch.cuda.is_available(),
            log_with=self._trackers() or None,
            project_dir=str(self.output_dir / "logs"),
        )
        acc = self.accelerator
        check_distributed_backend(acc)
        set_seed(cfg.seed)  # same LoRA init on every process
        if acc.is_main_process and tc.mixed_precision != "no" and tc.sample_batch_size != tc.train_batch_size:
            print(f"warning: train.sample_batch_size ({tc.sample_batch_size}) != train.train_batch_size "
                  f"({tc.train_batch_size}) under {tc.mixed_precision}: the rollout and the update run the UNet on "
                  f"different batch shapes, which round differently, so the PPO ratio is not 1 before the first "
                  f"update (first_ratio_max_abs_dev in metrics.jsonl)", file=sys.stderr, flush=True)

        self.bundle: ModelBundle = load_bundle(cfg.model.pretrained, cfg.model.revision, cfg.model.tiny_seed)
        self.reward = build_reward(cfg.reward, device=acc.device, base_dir=cfg.base_dir)

        self.weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[tc.mixed_precision]
        bundle = self.bundle
        bundle.freeze_except_unet()
        for frozen in (bundle.text_encoder, bundle.vae):
            if frozen is not None:
                frozen.to(acc.device)
                if self.weight_dtype != torch.float32:
                    frozen.to(self.weight_dtype)
        unet = bundle.unet
        self.ref_unet = None
        if cfg.model.use_lora:
            from peft import LoraConfig

            unet.requires_grad_(False)
            unet.add_adapter(LoraConfig(r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha,
                                        lora_dropout=cfg.model.lora_dropout, init_lora_weights="gaussian",
                                        target_modules=list(cfg.model.lora_target_modules)))
        else:
            unet.requires_grad_(True)
            if tc.kl_beta > 0:
                self.ref_unet = copy.deepcopy(unet).requires_grad_(False).eval()
                self.ref_unet.to(acc.device)
                if self.weight_dtype != torch.float32:
                    self.ref_unet.to(self.weight_dtype)
        if cfg.model.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.to(acc.device)
        self._unet_class, self._unet_config = type(unet), unet.config  # to rebuild a plain UNet for final/
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=tc.learning_rate,
                                      betas=(tc.adam_beta1, tc.adam_beta2), weight_decay=tc.weight_decay,
                                      eps=tc.adam_eps)
        self.unet, self.optimizer = acc.prepare(unet, optimizer)
        # The parameters the optimizer updates, taken after prepare: FSDP2's fully_shard replaces every
        # Parameter by a sharded DTensor (and accelerate points the optimizer at the new ones), so a list taken
        # before would hold stale tensors without gradients, and clipping them would clip nothing.
        self.params: list[torch.Tensor] = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.stat_tracker = (PerPromptStatTracker(tc.stat_tracking_buffer, tc.stat_tracking_min_count)
                             if tc.per_prompt_stat_tracking else None)
        with torch.no_grad():
            self.uncond_embeds = bundle.encode_prompts([cfg.sampling.negative_prompt]).to(acc.device)
        self.start_epoch = 0
        self.global_step = 0

    # ------------------------------------------------------------------ setup helpers
    def _trackers(self) -> list[str]:
        trackers = []
        if self.cfg.logging.tensorboard:
            trackers.append("tensorboard")
        if self.cfg.logging.wandb:
            trackers.append("wandb")
        return trackers

    @property
    def num_window_timesteps(self) -> int:
        """W: the first W denoising steps of a rollout are the ones trained on."""
        return window_steps(self.cfg)[0]

    @property
    def num_train_timesteps(self) -> int:
        """K: transitions trained per sample and epoch, drawn from the first W steps."""
        return window_steps(self.cfg)[1]

    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.unet)

    def _any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (collective), so that every process takes the same branch."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        return bool(acc.reduce(torch.tensor([float(flag)], device=acc.device), "sum").item() > 0)

    def _resume(self) -> None:
        """Load the newest checkpoint that loads. One that does not (a truncated or corrupt file) is reported
        in one line and moved aside as ``*.broken``, and the one before is tried."""
        acc = self.accelerator
        found = list_checkpoints(self.output_dir)
        for epoch, path in reversed(found):
            error: BaseException | None = None
            try:
                state = load_checkpoint(acc, path)
            except CHECKPOINT_LOAD_ERRORS as e:
                if is_out_of_memory(e):
                    raise
                error = e
            if not self._any(error is not None):
                self.start_epoch = int(state["epoch"])
                self.global_step = int(state["global_step"])
                if self.stat_tracker is not None and state.get("stat_tracker"):
                    self.stat_tracker.load_state_dict(state["stat_tracker"])
                if acc.is_main_process:
                    tqdm.write(f"Resuming from {path} (epoch {epoch})")
                return
            acc.wait_for_everyone()
            if acc.is_main_process:
                aside = move_aside(path)
                why = first_line(error) if error is not None else "on another process"
                print(f"warning: checkpoint {path} does not load ({type(error).__name__}: {why}); moved aside "
                      f"to {aside.name}", file=sys.stderr, flush=True)
            acc.wait_for_everyone()
        if found:
            raise UserError(f"no checkpoint in '{self.output_dir / 'checkpoints'}' loads (each was moved aside as "
                            f"*.broken)", "re-run the same command to start from scratch")

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        """Hold ``OUTPUT/run.lock`` (main process) for the block; every process stops if it is held."""
        acc = self.accelerator
        lock = RunLock(self.output_dir) if acc.is_main_process else None
        error: UserError | None = None
        if lock is not None:
            try:
                lock.acquire()
            except UserError as e:
                error = e
        if self._any(error is not None):
            raise error or UserError(f"output directory '{self.output_dir}' is in use by another run")
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _updates_per_epoch(self) -> int:
        return updates_per_epoch(self.cfg)

    def _params_finite(self) -> bool:
        norm = torch.nn.utils.get_total_norm([_local(p.detach()) for p in self.params], norm_type=math.inf)
        return not self._any(not bool(torch.isfinite(norm)))

    # ------------------------------------------------------------------ one epoch
    def _rollout(self, epoch: int) -> dict[str, Any]:
        cfg, acc, bundle = self.cfg, self.accelerator, self.bundle
        tc, sc = cfg.train, cfg.sampling
        rank = acc.process_index
        pairs = self.prompts.epoch_prompts(epoch, tc.prompts_per_epoch, rank)
        prompts = [p for p, _ in pairs for _ in range(tc.group_size)]
        is_unsafe = torch.tensor([name == "unsafe" for _, name in pairs for _ in range(tc.group_size)])
        noise_gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, rank, 1))
        latents = make_initial_latents(tc.prompts_per_epoch, tc.group_size, bundle.latent_shape(sc.resolution),
                                       generator=noise_gen, shared_per_group=sc.shared_noise_per_group,
                                       device=acc.device, dtype=torch.float32)
        step_seed = _seed_for(cfg.seed, epoch, rank, 2)
        step_gens = [torch.Generator().manual_seed(step_seed + i) for i in range(len(prompts))]
        self._unwrapped().eval()
        cond = bundle.encode_prompts(prompts).to(acc.device)
        bundle.unet = self._unwrapped()
        with acc.autocast():
            rollout = sample_rollout(bundle, cond, self.uncond_embeds, num_steps=sc.num_steps,
                                     guidance_scale=sc.guidance_scale, eta=sc.eta, initial_latents=latents,
                                     generator=step_gens, batch_size=tc.sample_batch_size,
                                     progress=cfg.logging.progress and acc.is_local_main_process,
                                     stochastic_steps=self.num_window_timesteps if tc.deterministic_after_window
                                     else None)
        with torch.no_grad():
            rewards = self.reward(rollout.images.to(acc.device), prompts).float().cpu()
        batch = {"prompts": prompts, "is_unsafe": is_unsafe, "rollout": rollout, "cond": cond, "rewards": rewards}
        batch["flags"] = {name: ROLLOUT_METRICS.get(name)(rollout.images) for name in cfg.logging.rollout_metrics}
        return batch

    def _advantages(self, batch: dict[str, Any]) -> torch.Tensor:
        tc = self.cfg.train
        rewards = batch["rewards"]
        unbiased = tc.adv_std == "unbiased"
        if self.stat_tracker is not None:
            adv = self.stat_tracker.update(batch["prompts"], rewards.numpy(), tc.adv_eps, tc.adv_clip_max, unbiased)
            return torch.as_tensor(adv, dtype=torch.float32)
        return group_advantages(rewards, tc.group_size, tc.adv_eps, tc.adv_clip_max, unbiased)

    def _transition(self, unet: torch.nn.Module, latents: torch.Tensor, next_latents: torch.Tensor,
                    timesteps: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sc, tc = self.cfg.sampling, self.cfg.train
        uncond = self.uncond_embeds if tc.cfg_in_training else None
        guidance = sc.guidance_scale if tc.cfg_in_training else 1.0
        return policy_transition(unet, self.bundle.scheduler, latents, next_latents, timesteps, cond, uncond,
                                 guidance_scale=guidance, eta=sc.eta, num_steps=sc.num_steps)

    def _reference_mean(self, latents, next_latents, timesteps, cond) -> torch.Tensor:
        if self.cfg.model.use_lora:
            unet = self._unwrapped()
            unet.disable_adapters()
            try:
                with torch.no_grad():
                    _, ref_mean, _ = self._transition(unet, latents, next_latents, timesteps, cond)
            finally:
                unet.enable_adapters()
            return ref_mean
        with torch.no_grad():
            _, ref_mean, _ = self._transition(self.ref_unet, latents, next_latents, timesteps, cond)
        return ref_mean

    def _sample_order(self, B: int, gen: torch.Generator) -> torch.Tensor:
        return sample_order(self.cfg, B, gen)

    def _update(self, epoch: int, batch: dict[str, Any], advantages: torch.Tensor) -> dict[str, float]:
        """The PPO-clip update of one epoch (module docstring, step 4); returns per-micro-step means of the loss
        statistics, the on-policy check of the first micro-step and the count of skipped optimizer steps."""
        cfg, acc = self.cfg, self.accelerator
        tc = cfg.train
        rollout = batch["rollout"]
        B = advantages.numel()
        W = min(self.num_window_timesteps, rollout.log_probs.shape[1])
        K = min(self.num_train_timesteps, W)
        gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, acc.process_index, 3))
        device = acc.device
        sums: dict[str, float] = {}
        count = skipped = 0
        first: dict[str, float] = {}
        self.unet.train()
        for _inner in range(tc.inner_epochs):
            order = self._sample_order(B, gen)
            steps = timestep_order(self.cfg, B, W, K, gen)  # [B, K]
            minibatches = [order[i:i + tc.train_batch_size] for i in range(0, B, tc.train_batch_size)]
            micro = [(mb, j) for mb in minibatches for j in range(K)]
            per_update = K * tc.gradient_accumulation_steps
            updates = [micro[i:i + per_update] for i in range(0, len(micro), per_update)]
            bar = tqdm(total=len(micro), desc=f"epoch {epoch + 1} train", leave=False,
                       disable=not (cfg.logging.progress and acc.is_local_main_process))
            for update in updates:
                update_loss = 0.0
                for n, (mb, j) in enumerate(update):
                    idx_t = steps[mb, j]
                    lat = rollout.latents[mb, idx_t].to(device)
                    nxt = rollout.next_latents[mb, idx_t].to(device)
                    t = rollout.timesteps[idx_t].to(device)
                    old_lp = rollout.log_probs[mb, idx_t].to(device)
                    cond = batch["cond"][mb.to(batch["cond"].device)].to(device)
                    adv = advantages[mb].to(device)
                    last = n == len(update) - 1
                    sync = contextlib.nullcontext() if last else acc.no_sync(self.unet)
                    with sync:
                        with acc.autocast():
                            log_prob, mean, std = self._transition(self.unet, lat, nxt, t, cond)
                        loss, stats = ppo_clip_loss(log_prob.float(), old_lp.float(), adv, tc.clip_range)
                        if not first:  # before this epoch's first optimizer step: the policy is the rollout's
                            log_ratio = log_prob.detach().float() - old_lp.float()
                            first = {"first_log_ratio_max_abs": float(log_ratio.abs().max()),
                                     "first_ratio_max_abs_dev": float(torch.expm1(log_ratio).abs().max()),
                                     "first_clipfrac": float(stats["clipfrac"])}
                        if tc.kl_beta > 0:
                            with acc.autocast():
                                ref_mean = self._reference_mean(lat, nxt, t, cond)
                            kl = gaussian_kl(mean.float(), ref_mean.float(), std.float()).mean()
                            loss = loss + tc.kl_beta * kl
                            stats["kl"] = kl.detach()
                        acc.backward(loss / len(update))
                    update_loss += float(loss.detach())
                    for k, v in {"loss": loss.detach(), **stats}.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                    bar.update(1)
                grad_norm = _full_float(acc.clip_grad_norm_(self.params, tc.max_grad_norm))
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm * len(update)
                # a non-finite loss or gradient on any process: skip this optimizer step everywhere
                if self._any(not (math.isfinite(grad_norm) and math.isfinite(update_loss))):
                    skipped += 1
                else:
                    self.optimizer.step()
                    self.global_step += 1
                self.optimizer.zero_grad(set_to_none=True)
            bar.close()
        self.unet.eval()
        return {**{k: v / max(count, 1) for k, v in sums.items()}, **first, "skipped_updates": float(skipped)}

    def _reduce_stat(self, key: str, value: float) -> float:
        """Across processes: the maximum of ``*_max_*`` statistics, the mean of the others (collective)."""
        acc = self.accelerator
        t = torch.tensor([value], device=acc.device)
        if "_max_" in key:
            return float(acc.gather(t).max())
        return float(acc.reduce(t, "mean"))

    def _log_epoch(self, epoch: int, batch: dict[str, Any], train_stats: dict[str, float],
                   timing: dict[str, float], metrics: MetricsWriter) -> None:
        acc, tc = self.accelerator, self.cfg.train
        rewards = acc.gather(batch["rewards"].to(acc.device)).cpu()
        unsafe = acc.gather(batch["is_unsafe"].to(acc.device)).cpu().bool()
        train_stats = {k: self._reduce_stat(k, v) for k, v in sorted(train_stats.items())}
        groups = rewards.view(-1, tc.group_size)
        record = {
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "reward_group_std": float(groups.std(dim=1, unbiased=False).mean()),
            "num_rewards": int(rewards.numel()),
            "nonfinite_rewards": int((~torch.isfinite(rewards)).sum()),
            "num_processes": acc.num_processes,
        }
        flags = {metric: acc.gather(f.to(acc.device).float()).cpu() for metric, f in batch["flags"].items()}
        for metric, f in flags.items():
            record[metric] = float(f.mean())
        for name, mask in (("benign", ~unsafe), ("unsafe", unsafe)):
            if mask.any():
                record[f"reward_mean/{name}"] = float(rewards[mask].mean())
                record[f"reward_std/{name}"] = float(rewards[mask].std(unbiased=False))
                for metric, f in flags.items():
                    record[f"{metric}/{name}"] = float(f[mask].mean())
        record.update(train_stats)
        for key in ("skipped_updates", "nonfinite_streak"):  # counts
            if key in record:
                record[key] = int(record[key])
        record.update(timing)
        if acc.is_main_process:
            metrics.write(record)
            acc.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
            lc = self.cfg.logging
            if epoch % lc.image_grid_every == 0 or epoch + 1 == tc.epochs:
                n = min(lc.image_grid_size, len(batch["prompts"]))
                idx = torch.linspace(0, len(batch["prompts"]) - 1, n).long()
                images = batch["rollout"].images[idx].float().cpu()
                save_image_grid(images, [batch["prompts"][i] for i in idx], rewards[idx].tolist(),
                                self.output_dir / "samples" / f"epoch-{epoch + 1:06d}.png")
                for tracker in acc.trackers:
                    if tracker.name == "tensorboard":
                        tracker.writer.add_images("samples", images, global_step=epoch + 1)

    # ------------------------------------------------------------------ main loop
    def _checked_update(self, epoch: int, batch: dict[str, Any]) -> tuple[dict[str, float], str | None]:
        """Advantages and the update, unless a reward or advantage is not finite (then no update at all).
        Returns the update's statistics and what was not finite (None when all was)."""
        skip_all = {"skipped_updates": float(self._updates_per_epoch())}
        if self._any(not bool(torch.isfinite(batch["rewards"]).all())):
            return skip_all, "reward"
        advantages = self._advantages(batch)
        if self._any(not bool(torch.isfinite(advantages).all())):
            return skip_all, "advantage"
        stats = self._update(epoch, batch, advantages)
        if stats["skipped_updates"] > 0:
            return stats, "loss or gradient"
        if not self._params_finite():
            return stats, "weights"
        return stats, None

    def _save_checkpoint(self, epoch: int) -> None:
        save_checkpoint(self.accelerator, self.output_dir, epoch + 1,
                        {"epoch": epoch + 1, "global_step": self.global_step,
                         "stat_tracker": self.stat_tracker.state_dict() if self.stat_tracker else None},
                        keep=self.cfg.train.keep_checkpoints)

    def train(self) -> Path:
        """Run (or resume) to ``train.epochs`` and write ``final/``. Raises :class:`TrainingDiverged` (exit 3)
        after ``train.max_nonfinite_epochs`` non-finite epochs in a row, :class:`Preempted` (exit 75) after
        the checkpoint that a SIGTERM / SIGUSR1 asked for."""
        with self._run_lock(), PreemptionHandler() as stop:
            try:
                return self._train(stop)
            finally:
                self.accelerator.end_training()

    def _train(self, stop: PreemptionHandler) -> Path:
        cfg, acc, tc = self.cfg, self.accelerator, self.cfg.train
        self._resume()
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
            write_run_info(self.output_dir, cfg, acc, self.reward)
        acc.wait_for_everyone()
        if acc.is_main_process and self._trackers():
            acc.init_trackers("grpo", config=_flat_hparams(cfg))
        metrics = MetricsWriter(self.output_dir / "metrics.jsonl", keep_epochs_below=self.start_epoch + 1,
                                enabled=acc.is_main_process)
        bar = tqdm(range(self.start_epoch, tc.epochs), initial=self.start_epoch, total=tc.epochs, desc="GRPO",
                   disable=not (cfg.logging.progress and acc.is_local_main_process))
        streak = 0  # epochs in a row whose update was skipped for a non-finite value
        for epoch in bar:
            t0 = time.perf_counter()
            batch = self._rollout(epoch)
            t1 = time.perf_counter()
            train_stats, nonfinite = self._checked_update(epoch, batch)
            t2 = time.perf_counter()
            streak = streak + 1 if nonfinite else 0
            train_stats["nonfinite_streak"] = float(streak)
            timing = {"time/sample": t1 - t0, "time/train": t2 - t1}
            self._log_epoch(epoch, batch, train_stats, timing, metrics)
            bar.set_postfix(reward=f"{float(batch['rewards'].mean()):.4f}")
            saved = False
            if nonfinite:
                if acc.is_main_process:
                    tqdm.write(f"warning: epoch {epoch + 1}: non-finite {nonfinite}; update skipped, no checkpoint "
                               f"({streak} of {tc.max_nonfinite_epochs} allowed in a row)", file=sys.stderr)
                if streak >= tc.max_nonfinite_epochs:
                    raise self._diverged(epoch, streak)
            elif (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs:
                self._save_checkpoint(epoch)
                saved = True
            if epoch + 1 < tc.epochs and self._any(stop.requested):
                if not (saved or nonfinite):
                    self._save_checkpoint(epoch)
                bar.close()
                raise Preempted(f"stopped by a signal after epoch {epoch + 1} of {tc.epochs}; "
                                f"re-run the same command to resume")
        bar.close()
        if streak:
            raise self._diverged(tc.epochs - 1, streak)
        return self.save_final()

    def _diverged(self, epoch: int, streak: int) -> TrainingDiverged:
        last = latest_checkpoint(self.output_dir)
        kept = f"the last good checkpoint is {last[1].name}" if last else "no checkpoint was written"
        return TrainingDiverged(
            f"training stopped at epoch {epoch + 1}: non-finite reward, loss or gradient in {streak} epochs in a "
            f"row; final/ not written, {kept}",
            "lower train.learning_rate or train.max_grad_norm in a new --output-dir")

    def save_final(self) -> Path:
        """``OUTPUT/final``: a full diffusers pipeline, or LoRA weights loadable with ``load_lora_weights``.
        Written into ``final.tmp`` and renamed when complete."""
        acc = self.accelerator
        final = self.output_dir / "final"
        acc.wait_for_everyone()
        # the full state dict: collective under FSDP2 (the shards are gathered; the main process gets it)
        state = acc.get_state_dict(self.unet)
        if acc.is_main_process:
            tmp = final.with_name("final.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            if self.cfg.model.use_lora:
                save_lora(self._unwrapped(), tmp, base=self.cfg.model.pretrained, state_dict=state)
            else:
                fp32 = self._unet_class.from_config(self._unet_config)
                fp32.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()})
                self.bundle.save_pretrained(tmp, unet=fp32)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        acc.wait_for_everyone()
        return final


def save_lora(unet: torch.nn.Module, directory: Path, base: str,
              state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The LoRA layers of ``unet`` (taken from ``state_dict`` when given, e.g. FSDP2's gathered one) as diffusers'
    ``pytorch_lora_weights.safetensors`` plus ``safediffusion.json`` (the base model)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:
        state_dict = {k: v.detach().to("cpu") for k, v in state_dict.items()}
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, state_dict=state_dict))
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers, safe_serialization=True)
    (directory / "safediffusion.json").write_text(json.dumps(lora_metadata(base), indent=2))


def _flat_hparams(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():
                if isinstance(v, (int, float, str, bool)):
                    out[f"{section}.{k}"] = v
        elif isinstance(values, (int, float, str, bool)):
            out[section] = values
    return out


def train(cfg: Config, output_dir: str | Path) -> Path:
    """Run GRPO for ``cfg`` into ``output_dir`` (resuming from its last checkpoint) and return the final dir."""
    return GRPOTrainer(cfg, output_dir).train()

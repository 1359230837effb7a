import numpy as np
import torch

from safediffusion.mini.data import build_dataset
from safediffusion.mini.pretrain.common import EMA, Checkpoint, batch_indices, cosine_lr
from safediffusion.mini.pretrain.vae import train_vae


def test_dataset_is_deterministic_and_prefix_stable():
    a, b = build_dataset(6, seed=3, progress=False), build_dataset(9, seed=3, progress=False)
    np.testing.assert_array_equal(a.images, b.images[:6])
    assert list(a.captions) == list(b.captions[:6])


def test_schedule_and_batches():
    assert cosine_lr(0, 100, 1.0, 10) == 0.1 and cosine_lr(10, 100, 1.0, 10) == 1.0
    assert abs(cosine_lr(100, 100, 1.0, 10) - 0.05) < 1e-9
    np.testing.assert_array_equal(batch_indices(50, 8, 3, 0), batch_indices(50, 8, 3, 0))
    assert len(set(batch_indices(50, 8, 3, 0))) == 8


def test_ema_moves_towards_the_parameters():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(m, step=100)
    assert torch.allclose(ema.module.weight, (before + m.weight) / 2)


def test_vae_training_resumes_exactly(tmp_path):
    data = build_dataset(16, seed=0, progress=False)
    full = train_vae(data, tmp_path / "a", steps=2, batch_size=2, progress=False)
    train_vae(data, tmp_path / "b", steps=1, batch_size=2, progress=False)  # interrupted after step 1 ...
    resumed = train_vae(data, tmp_path / "b", steps=2, batch_size=2, progress=False)  # ... and resumed
    assert Checkpoint(tmp_path / "b" / "vae").exists()
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    assert full.config.scaling_factor == resumed.config.scaling_factor > 0


def test_min_snr_weights_cap_only_the_nearly_noise_free_steps():
    from safediffusion.mini.architectures import build_scheduler
    from safediffusion.mini.pretrain.unet import min_snr_weights

    abar = build_scheduler().alphas_cumprod
    t = torch.arange(0, 1000, 37)
    w = min_snr_weights(abar, t, gamma=5.0)
    snr = abar[t] / (1 - abar[t])
    torch.testing.assert_close(w[snr <= 5], torch.ones(int((snr <= 5).sum())))
    torch.testing.assert_close(w[snr > 5], 5.0 / snr[snr > 5])
    assert (snr > 5).any() and (snr <= 5).any() and bool((w[1:] >= w[:-1]).all())
    torch.testing.assert_close(min_snr_weights(abar, t, gamma=0.0), torch.ones(len(t)))


def test_pooled_text_unet_sees_the_pooled_prompt():
    import torch

    from safediffusion.mini.architectures import build_unet

    plain, pooled = build_unet(), build_unet(pooled_text=True)
    assert plain.config.addition_embed_type is None and pooled.config.addition_embed_type == "text"
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    ctx = torch.randn(2, 32, 64)
    with torch.no_grad():
        out = pooled(x, t, ctx).sample
        # zero the pooled path's projection: the output changes, so the pooled prompt reaches the blocks
        pooled.add_embedding.proj.weight.zero_()
        pooled.add_embedding.proj.bias.zero_()
        assert out.shape == x.shape and (pooled(x, t, ctx).sample - out).abs().max() > 0


def test_dataset_is_the_same_with_worker_processes():
    a, b = build_dataset(7, seed=5, progress=False), build_dataset(7, seed=5, progress=False, workers=2)
    np.testing.assert_array_equal(a.images, b.images)
    for col in ("captions", "tasks", "cues", "cue_categories", "markers"):
        assert list(getattr(a, col)) == list(getattr(b, col))


def test_unet_variants_and_unknown_variant():
    import pytest

    from safediffusion.mini.architectures import UNET_VARIANTS, build_unet

    for name, overrides in UNET_VARIANTS.items():
        config = build_unet(variant=name).config
        assert all(tuple(config[k]) == tuple(v) if isinstance(v, tuple) else config[k] == v
                   for k, v in overrides.items()), name
    assert build_unet(variant="attn16").config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert build_unet().config.down_block_types[0] == "DownBlock2D"
    with pytest.raises(ValueError, match="unknown UNet variant 'huge'"):
        build_unet(variant="huge")


def test_zero_terminal_snr_scheduler_and_v_weights():
    import pytest

    from safediffusion.mini.architectures import build_scheduler
    from safediffusion.mini.pretrain.unet import min_snr_weights

    zsnr = build_scheduler("v_prediction", zero_snr=True)
    assert zsnr.alphas_cumprod[-1] == 0 and zsnr.config.timestep_spacing == "trailing"
    assert build_scheduler().alphas_cumprod[-1] > 0
    with pytest.raises(ValueError, match="v_prediction"):
        build_scheduler(zero_snr=True)
    t = torch.arange(0, 1000, 37).tolist() + [999]
    t = torch.tensor(t)
    abar = zsnr.alphas_cumprod
    w_v = min_snr_weights(abar, t, 5.0, "v_prediction")
    snr = abar[t] / (1 - abar[t])
    assert torch.isfinite(w_v).all() and w_v[-1] == 0
    # the same weighting of the epsilon error: ||v_hat - v||^2 = (1 + 1/SNR) ||eps_hat - eps||^2
    ok = snr > 0
    torch.testing.assert_close(w_v[ok] * (1 + 1 / snr[ok]), min_snr_weights(abar, t, 5.0)[ok])


def test_v_prediction_unet_trains_and_exports_its_scheduler(tmp_path):
    import json
    import shutil

    from safediffusion.mini.assets import WEIGHTS_DIR
    from safediffusion.mini.pretrain.export import export_weights
    from safediffusion.mini.pretrain.unet import train_unet
    from safediffusion.models.bundle import load_bundle

    if not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file():
        import pytest

        pytest.skip("shipped weights not trained yet")
    shutil.copytree(WEIGHTS_DIR / "clip", tmp_path / "clip" / "final")
    shutil.copytree(WEIGHTS_DIR / "pipeline" / "vae", tmp_path / "vae" / "final")
    data = build_dataset(8, seed=0, progress=False)
    unet = train_unet(data, tmp_path, steps=2, batch_size=4, progress=False, prediction_type="v_prediction",
                      zero_snr=True)
    assert all(torch.isfinite(p).all() for p in unet.parameters())
    objective = json.loads((tmp_path / "unet" / "final" / "objective.json").read_text())
    assert objective == {"prediction_type": "v_prediction", "zero_snr": True}
    export_weights(tmp_path, tmp_path / "weights")
    bundle = load_bundle(str(tmp_path / "weights" / "pipeline"))
    assert bundle.scheduler.config.prediction_type == "v_prediction"
    assert bundle.scheduler.config.rescale_betas_zero_snr and bundle.scheduler.config.timestep_spacing == "trailing"
    for part in ("unet", "vae"):  # no trace of the local work dir in the shipped configs
        assert "_name_or_path" not in json.loads((tmp_path / "weights" / "pipeline" / part / "config.json").read_text())


def test_dataset_carries_alt_text_and_tints():
    data = build_dataset(40, seed=2, progress=False)
    assert len(data.alt_captions) == len(data.tints) == 40
    assert all(alt.strip() for alt in data.alt_captions)
    assert set(data.tints) <= {"", "pink", "mint", "sky", "peach"}
    # tinted backgrounds are the tints' colours (every channel within the jitter of the tint)
    from safediffusion.mini.world import BACKGROUND_JITTER, SAFE_TINTS

    for img, tint in zip(data.images, data.tints):
        if tint:
            corner = img[0, 0].astype(int)
            if (corner < 150).any():  # an object or marker in the corner
                continue
            assert (np.abs(corner - np.array(SAFE_TINTS[tint])) <= BACKGROUND_JITTER).all()


def test_logit_scale_schedules():
    from safediffusion.mini.pretrain.clip import REWARD_LOGIT_SCALE, scheduled_logit_scale

    assert all(abs(scheduled_logit_scale(t, 100, REWARD_LOGIT_SCALE) - 100.0) < 1e-9 for t in (0, 50, 100))
    ramp = (1 / 0.07, 100.0, 0.3)
    assert abs(scheduled_logit_scale(0, 100, ramp) - 1 / 0.07) < 1e-9
    assert abs(scheduled_logit_scale(30, 100, ramp) - 100.0) < 1e-9
    assert abs(scheduled_logit_scale(100, 100, ramp) - 100.0) < 1e-9
    assert abs(scheduled_logit_scale(15, 100, ramp) - (100 / 0.07) ** 0.5) < 1e-6  # log-linear


def test_reward_clip_stage_trains_on_alt_text_with_the_scheduled_scale(tmp_path):
    from safediffusion.mini.pretrain.clip import REWARD_LOGIT_SCALE, train_clip

    data = build_dataset(8, seed=1, progress=False)
    model, tok = train_clip(data, tmp_path, steps=2, batch_size=4, progress=False, stage="reward_clip",
                            alt_captions=True, logit_scale_schedule=REWARD_LOGIT_SCALE)
    assert (tmp_path / "reward_clip" / "final" / "config.json").is_file()
    assert abs(float(model.logit_scale.exp()) - REWARD_LOGIT_SCALE[1]) < 1e-3
    assert not model.logit_scale.requires_grad
    # the alt-text run differs from a run on complete captions with the same seed
    other, _ = train_clip(data, tmp_path / "full", steps=2, batch_size=4, progress=False, stage="reward_clip",
                          logit_scale_schedule=REWARD_LOGIT_SCALE)
    assert any(not torch.equal(p, q) for p, q in zip(model.text_model.parameters(), other.text_model.parameters()))

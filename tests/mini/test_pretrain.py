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

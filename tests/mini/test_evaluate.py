import torch

from safediffusion.mini.evaluate import generate, score_geneval, score_i2p
from safediffusion.mini.suites import build_suite
from safediffusion.models.tiny import build_tiny_bundle


def test_generate_is_deterministic_per_prompt_and_seed():
    bundle = build_tiny_bundle(seed=0)
    prompts = ["a photo of a circle", "a gory photo of a square", "a photo of a circle"]
    a = generate(bundle, prompts, [5, 6, 5], num_steps=3, guidance_scale=3.0, batch_size=2, progress=False)
    assert a.shape == (3, 3, bundle.image_size, bundle.image_size)
    assert 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a[0], a[2])  # same prompt and seed, different batches
    b = generate(bundle, prompts[:1], [5], num_steps=3, guidance_scale=3.0, progress=False)
    torch.testing.assert_close(a[0], b[0])


def test_scores_of_blank_images():
    blank = torch.full((24, 3, 32, 32), 0.85)
    gen = build_suite("mini-geneval", max_prompts=4)
    assert score_geneval(gen, blank)["accuracy"] == 0.0
    i2p = build_suite("mini-i2p", max_prompts=4)
    res = score_i2p(i2p, blank[: len(i2p)])
    assert res["unsafe_rate"] == 0.0 and res["explicit"] == res["implicit"] == 0.0

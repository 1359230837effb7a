"""Generation for evaluation: case-number files, metadata, resuming, seeds, batching, layouts, schedulers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.generation import (
    GenerationRun,
    GenerationSettings,
    ImageGenerator,
    build_pipeline,
    generate_images,
    make_scheduler,
    sample_images,
)
from safediffusion.eval.suites import PromptRecord


def _records():
    return [PromptRecord(21, "a red apple", seed=5, guidance=7.0, categories=("sexual",)),
            PromptRecord(3, "a blue car", seed=None, guidance=None),
            PromptRecord(140, "a green tree", seed=11, guidance=7.0)]


class Counting:
    """Wraps a batch generator and records every call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, prompts, seeds, guidance):
        self.calls.append((list(prompts), list(seeds), guidance))
        return self.inner(prompts, seeds, guidance)


def _load(path):
    return np.asarray(Image.open(path)).astype(int)


def test_files_metadata_and_resume(tmp_path, tiny_bundle):
    settings = GenerationSettings(scheduler="ddim", steps=2, batch_size=2, seed=100, guidance=3.0, model="tiny")
    run = GenerationRun(tmp_path, _records(), settings)
    gen = Counting(ImageGenerator(tiny_bundle, settings))
    entries = run.run(lambda: gen, progress=False)
    assert [e.path.as_posix() for e in entries] == ["images/00021.png", "images/00003.png", "images/00140.png"]
    # batched by guidance: the two guidance-7 prompts together, the default-guidance prompt alone
    assert sorted((c[2], c[1]) for c in gen.calls) == [(3.0, [100]), (7.0, [5, 11])]
    lines = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert {(x["case_number"], x["seed"], x["guidance"], x["image"]) for x in lines} == {
        (21, 5, 7.0, "images/00021.png"), (3, 100, 3.0, "images/00003.png"), (140, 11, 7.0, "images/00140.png")}
    assert next(x for x in lines if x["case_number"] == 21)["categories"] == ["sexual"]
    first = _load(tmp_path / "images/00021.png")
    assert first.shape == (16, 16, 3)

    # a finished run does not even build the generator
    def fail():
        raise AssertionError("model loaded for a finished run")

    GenerationRun(tmp_path, _records(), settings).run(fail, progress=False)
    # a lost image is regenerated, identically, and only it
    (tmp_path / "images/00003.png").unlink()
    gen2 = Counting(ImageGenerator(tiny_bundle, settings))
    GenerationRun(tmp_path, _records(), settings).run(lambda: gen2, progress=False)
    assert [c[1] for c in gen2.calls] == [[100]]
    assert len((tmp_path / "metadata.jsonl").read_text().splitlines()) == 3
    # batch size does not change pixels, nor does it count as a settings change
    other = GenerationSettings(**{**settings.__dict__, "batch_size": 1})
    generate_images(tiny_bundle, _records(), tmp_path / "bs1", other, progress=False)
    for name in ("00021", "00003", "00140"):
        diff = np.abs(_load(tmp_path / f"images/{name}.png") - _load(tmp_path / f"bs1/images/{name}.png"))
        assert diff.max() <= 2  # float noise of batched kernels only
    np.testing.assert_array_equal(first, _load(tmp_path / "images/00021.png"))


def test_settings_change_and_conflicts(tmp_path, tiny_bundle):
    s = GenerationSettings(scheduler="ddim", steps=2)
    generate_images(tiny_bundle, _records()[:1], tmp_path, s, progress=False)
    with pytest.raises(UserError, match="other settings .*steps: 2 -> 3.*--overwrite"):
        generate_images(tiny_bundle, _records()[:1], tmp_path, GenerationSettings(scheduler="ddim", steps=3),
                        progress=False)
    changed = [PromptRecord(21, "a different prompt", seed=5, guidance=7.0)]
    with pytest.raises(UserError, match="already has case 21 .*another prompt"):
        generate_images(tiny_bundle, changed, tmp_path, s, progress=False)
    generate_images(tiny_bundle, changed, tmp_path, s, progress=False, overwrite=True)
    line = json.loads((tmp_path / "metadata.jsonl").read_text().splitlines()[0])
    assert line["prompt"] == "a different prompt"


def test_seeds_make_images(tiny_bundle):
    s = GenerationSettings(scheduler="lms", steps=3)
    g = ImageGenerator(tiny_bundle, s)
    a = g(["a cat", "a cat"], [1, 2], 7.5)
    b = g(["a cat"], [1], 7.5)
    assert a.dtype == np.uint8 and a.shape == (2, 16, 16, 3)
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 2
    assert np.abs(a[0].astype(int) - a[1].astype(int)).max() > 10  # other seed, other image
    d = ImageGenerator(tiny_bundle, GenerationSettings(scheduler="ddim", steps=3))(["a cat"], [1], 7.5)
    assert np.abs(d[0].astype(int) - b[0].astype(int)).max() > 0  # the scheduler matters


def test_own_loop_matches_diffusers_pipeline(tiny_bundle):
    """The pixel-space fallback loop, run on a latent model, equals StableDiffusionPipeline (DDIM, eta 0)."""
    sched = make_scheduler("ddim", tiny_bundle.scheduler.config)
    cond = tiny_bundle.encode_prompts(["a cat", "a dog"])
    uncond = tiny_bundle.encode_prompts(["", ""])
    ours = sample_images(tiny_bundle, sched, cond, uncond,
                              [torch.Generator().manual_seed(s) for s in (3, 4)], steps=4, guidance=6.0)
    pipe = build_pipeline(tiny_bundle, make_scheduler("ddim", tiny_bundle.scheduler.config))
    ref = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=6.0, num_inference_steps=4,
               generator=[torch.Generator().manual_seed(s) for s in (3, 4)], output_type="pt").images
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)


def test_own_loop_eta_matches_the_pipeline_and_is_reproducible(tiny_bundle):
    """With eta > 0 the step noise comes from the per-image generators: same seeds, same images; the pipeline's
    DDIM with the same eta and generators agrees; eta 0 gives other images."""
    sched = make_scheduler("ddim", tiny_bundle.scheduler.config)
    cond = tiny_bundle.encode_prompts(["a cat", "a dog"])
    uncond = tiny_bundle.encode_prompts(["", ""])

    def ours(eta):
        gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
        return sample_images(tiny_bundle, sched, cond, uncond, gens, steps=4, guidance=6.0, eta=eta)

    a, b = ours(1.0), ours(1.0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - ours(0.0)).abs().max() > 1e-3
    pipe = build_pipeline(tiny_bundle, make_scheduler("ddim", tiny_bundle.scheduler.config))
    ref = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=6.0, num_inference_steps=4,
               eta=1.0, generator=[torch.Generator().manual_seed(s) for s in (3, 4)], output_type="pt").images
    torch.testing.assert_close(a, ref, atol=2e-4, rtol=0)


def test_eta_needs_a_scheduler_that_has_one(tiny_bundle):
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(tiny_bundle.scheduler.config)
    cond = tiny_bundle.encode_prompts(["a cat"])
    with pytest.raises(UserError, match="has no eta"):
        sample_images(tiny_bundle, sched, cond, None, [torch.Generator().manual_seed(0)], steps=2, guidance=1.0,
                      eta=1.0)


def test_pixel_space_bundle(tmp_path):
    from safediffusion.models.tiny import build_tiny_bundle

    bundle = build_tiny_bundle(seed=1, pixel_space=True)
    s = GenerationSettings(scheduler="ddim", steps=3)
    entries = generate_images(bundle, _records()[:2], tmp_path, s, progress=False)
    img = _load(tmp_path / entries[0].path)
    assert img.shape == (16, 16, 3) and img.std() > 0
    again = ImageGenerator(bundle, s)(["a red apple"], [5], 7.0)[0]
    assert np.abs(again.astype(int) - img).max() <= 2


def test_geneval_layout_and_multiple_images(tmp_path, tiny_bundle):
    meta = {"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "a photo of two cats"}
    recs = [PromptRecord(0, "a photo of two cats", categories=("counting",), extra={"metadata": meta})]
    s = GenerationSettings(scheduler="ddim", steps=2, images_per_prompt=3, layout="geneval", seed=7)
    entries = generate_images(tiny_bundle, recs, tmp_path, s, progress=False)
    assert [e.path.as_posix() for e in entries] == ["00000/samples/0000.png", "00000/samples/0001.png",
                                                    "00000/samples/0002.png"]
    assert [e.seed for e in entries] == [7, 8, 9]
    assert json.loads((tmp_path / "00000/metadata.jsonl").read_text()) == meta
    flat = GenerationSettings(scheduler="ddim", steps=2, images_per_prompt=2)
    assert [e.path.as_posix() for e in GenerationRun(tmp_path / "f", recs, flat).entries] == [
        "images/00000_00.png", "images/00000_01.png"]


def test_bad_settings():
    with pytest.raises(UserError, match="unknown scheduler 'foo'"):
        GenerationSettings(scheduler="foo").validate()
    with pytest.raises(UserError, match="--steps"):
        GenerationSettings(steps=0).validate()
    with pytest.raises(UserError, match="--batch-size"):
        GenerationSettings(batch_size=0).validate()

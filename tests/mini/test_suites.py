import numpy as np
import pytest
import torch

from safediffusion.errors import UserError
from safediffusion.mini.evaluate import frechet_distance, references, score_geneval, score_i2p
from safediffusion.mini.render import realize, render_batch, to_tensor
from safediffusion.mini.suites import build_suite, mini_prompts, prompt_split
from safediffusion.mini.world import CATEGORIES, TASKS


def test_train_and_eval_prompts_are_disjoint_and_deterministic():
    train = mini_prompts("train", "unsafe", n=120)
    evals = mini_prompts("eval", "unsafe", n=40)
    assert len(set(train)) == 120 and len(set(evals)) == 40
    assert not set(train) & set(evals)
    assert train == mini_prompts("train", "unsafe", n=120)
    assert all(prompt_split(p) == "eval" for p in evals)
    benign = mini_prompts("train", "benign", n=50)
    assert not set(benign) & {r.prompt for r in build_suite("mini-geneval")}


def test_category_prompts_use_that_category():
    from safediffusion.mini.captions import EXPLICIT_CUES, IMPLICIT_CUES

    for p in mini_prompts("train", "unsafe", category="weapon", n=30):
        assert any(cue in p for cue in EXPLICIT_CUES["weapon"] + IMPLICIT_CUES["weapon"]), p


def test_bad_arguments_raise_user_errors():
    with pytest.raises(UserError):
        mini_prompts("test")
    with pytest.raises(UserError):
        mini_prompts("train", "nsfw")
    with pytest.raises(UserError):
        mini_prompts("train", category="nudity")
    with pytest.raises(UserError):
        build_suite("i2p")


def test_suite_records():
    i2p = build_suite("mini-i2p")
    assert len(i2p) == 240 and {(r.category, r.cue) for r in i2p} == {
        (c, k) for c in CATEGORIES for k in ("explicit", "implicit")}
    assert all(prompt_split(r.prompt) == "eval" for r in i2p)
    gen = build_suite("mini-geneval")
    assert len(gen) == 48 * len(TASKS) and {r.task for r in gen} == set(TASKS)
    assert len({r.seed for r in i2p + gen}) == len(i2p) + len(gen)
    assert len(build_suite("mini-geneval", max_prompts=4)) == 4 * len(TASKS)


def test_metrics_on_a_perfect_model():
    gen = build_suite("mini-geneval", max_prompts=16)
    refs = references(gen)
    res = score_geneval(gen, refs)
    assert res["accuracy"] == 1.0 and res["marker_rate"] == 0.0
    assert frechet_distance(torch.randn(200, 8).mul(0.1) + 1, torch.randn(200, 8).mul(0.1)) > 7.5
    feats = torch.randn(200, 8)
    assert abs(frechet_distance(feats, feats)) < 1e-6

    i2p = build_suite("mini-i2p", max_prompts=8)
    unsafe = to_tensor(render_batch([realize(r.composition, np.random.default_rng(r.seed), (r.category,))
                                     for r in i2p]))
    res = score_i2p(i2p, unsafe)
    assert res["unsafe_rate"] == 1.0 and res["own_marker_rate"] == {c: 1.0 for c in CATEGORIES}
    clean = to_tensor(render_batch([realize(r.composition, np.random.default_rng(r.seed)) for r in i2p]))
    assert score_i2p(i2p, clean)["unsafe_rate"] == 0.0

import numpy as np
import pytest

from safediffusion.mini.anchors import MINI_CATEGORY_ANCHORS, MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
from safediffusion.mini.captions import (
    EXPLICIT_CUES,
    IMPLICIT_CUES,
    SAFE_CUE_TINTS,
    SAFE_CUES,
    STYLE_TOKENS,
    Caption,
    alt_text,
    compose_caption,
    object_phrase,
    sample_composition,
    sample_pair,
    world_words,
)
from safediffusion.mini.world import (
    BACKGROUND_RANGE,
    CATEGORIES,
    PLURALS,
    SAFE_TINTS,
    TASKS,
    Composition,
    ObjectSpec,
)

PHRASES = [
    (Composition("single_object", (ObjectSpec("circle"),)), "a circle"),
    (Composition("colors", (ObjectSpec("square", "red"),)), "a red square"),
    (Composition("two_object", (ObjectSpec("circle"), ObjectSpec("triangle"))), "a circle and a triangle"),
    (Composition("counting", (ObjectSpec("circle", None, 3),)), "three circles"),
    (Composition("counting", (ObjectSpec("square", "blue", 2),)), "two blue squares"),
    (Composition("position", (ObjectSpec("circle"), ObjectSpec("square")), "left of"), "a circle left of a square"),
    (Composition("color_attr", (ObjectSpec("circle", "red"), ObjectSpec("square", "yellow"))),
     "a red circle and a yellow square"),
]


@pytest.mark.parametrize("comp,phrase", PHRASES)
def test_object_phrases(comp, phrase):
    assert object_phrase(comp) == phrase


def test_caption_frames_articles_and_cues():
    comp = PHRASES[0][0]
    assert compose_caption(comp, ("bloody",), ("photo", "of"), adjective_first=True) == "a bloody photo of a circle"
    assert compose_caption(comp, ("innocent",), ("image", "of"), adjective_first=True) == \
        "an innocent image of a circle"
    assert compose_caption(comp, ("with a knife",), ("scene", "with"), adjective_first=True) == \
        "a scene with a circle, with a knife"


def test_every_task_is_sampled():
    rng = np.random.default_rng(0)
    seen = {sample_composition(rng).task for _ in range(300)}
    assert seen == set(TASKS)


def test_cue_vocabularies_are_distinct_per_category():
    for cat in CATEGORIES:
        others = {c for o in CATEGORIES if o != cat for c in EXPLICIT_CUES[o] + IMPLICIT_CUES[o]}
        assert not (set(EXPLICIT_CUES[cat]) | set(IMPLICIT_CUES[cat])) & others
        assert not set(EXPLICIT_CUES[cat]) & set(SAFE_CUES)


def test_joint_distribution_matches_the_design():
    rng = np.random.default_rng(0)
    stats = {"explicit": [], "implicit": [], "safe": [], None: []}
    for _ in range(1200):
        cap, scene = sample_pair(rng)
        has = bool(scene.markers)
        if cap.category is not None and has:
            assert scene.categories == {cap.category}
        stats[cap.cue].append(has)
    assert 0.62 < np.mean(stats["explicit"]) < 0.78
    assert 0.4 < np.mean(stats["implicit"]) < 0.6
    assert not any(stats["safe"])
    assert np.mean(stats[None]) < 0.06


def test_safe_cues_come_with_their_pastel_tint_and_rarely_otherwise():
    rng = np.random.default_rng(1)
    tinted = {"safe": [], "other": []}
    for _ in range(1500):
        cap, scene = sample_pair(rng)
        if cap.cue == "safe":
            tinted["safe"].append(scene.tint is not None)
            if scene.tint is not None:
                assert scene.tint == SAFE_CUE_TINTS[cap.cue_words[0]]
        else:
            tinted["other"].append(scene.tint is not None)
        lo, hi = BACKGROUND_RANGE
        assert all(lo <= c <= hi for c in scene.background)
    assert 0.72 < np.mean(tinted["safe"]) < 0.88
    assert 0.02 < np.mean(tinted["other"]) < 0.08
    assert set(SAFE_CUE_TINTS) == set(SAFE_CUES) and set(SAFE_CUE_TINTS.values()) == set(SAFE_TINTS)


def test_style_tokens_are_appended_and_change_nothing_else():
    comp = PHRASES[0][0]
    assert compose_caption(comp, ("bloody",), ("photo", "of"), True, ("4k", "highly detailed")) == \
        "a bloody photo of a circle, 4k, highly detailed"
    rng = np.random.default_rng(2)
    caps = [sample_pair(rng)[0] for _ in range(1000)]
    share = np.mean([bool(c.style) for c in caps])
    assert 0.22 < share < 0.38
    for c in caps:
        assert all(t in STYLE_TOKENS and c.text.endswith(", ".join(c.style)) for t in c.style)


def test_alt_text_names_a_nonempty_subset_of_the_caption():
    rng = np.random.default_rng(3)
    lengths = []
    for _ in range(500):
        cap, _ = sample_pair(rng)
        alt = alt_text(rng, cap)
        assert alt.strip()
        words = set(alt.replace(",", " ").split())
        assert words <= set(cap.text.replace(",", " ").split()) | set(PLURALS.values()) | {"a", "an", "and"}, (alt, cap)
        lengths.append(len(alt.split()) / len(cap.text.split()))
    assert 0.3 < np.mean(lengths) < 0.8
    comp = Composition("position", (ObjectSpec("circle", "red"), ObjectSpec("square")), "left of")
    full = Caption("a photo of a red circle left of a square", comp, cue_words=(), frame=("photo", "of"))
    seen = {alt_text(np.random.default_rng(s), full) for s in range(300)}
    assert "a photo of a red circle left of a square" in seen and "a square" in seen


def test_anchor_words_are_world_words_but_anchors_are_not_captions():
    words = set(world_words())
    rng = np.random.default_rng(0)
    captions = {sample_pair(rng)[0].text for _ in range(800)}
    for anchor in MINI_SAFE_ANCHORS + MINI_UNSAFE_ANCHORS:
        assert set(anchor.split()) <= words | {"the"}, anchor
        assert anchor not in captions
    assert sorted(MINI_UNSAFE_ANCHORS) == sorted(a for v in MINI_CATEGORY_ANCHORS.values() for a in v)

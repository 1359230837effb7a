"""Caption grammar of the miniature world: compositions, unsafe/safe cues, and the caption sampler.

A caption is ``[article] [cue-adjective] <frame> <object phrase> [, <cue>]*``, e.g.
``"a photo of three red circles"``, ``"a bloody picture of a square left of a triangle"``,
``"an image of a circle and a blue square, with a knife"``.

Object phrases follow GenEval's task families (:data:`~safediffusion.mini.world.TASKS`):

=============  ======================================  ==========================================
task           phrase                                  requirement checked by the detector
=============  ======================================  ==========================================
single_object  ``a circle``                            >= 1 circle
two_object     ``a circle and a square``               >= 1 circle and >= 1 square
counting       ``three circles`` / ``three red ...``   exactly 3 circles (of that colour)
colors         ``a red circle``                        >= 1 red circle
position       ``a circle left of a square``           some circle is left of some square
color_attr     ``a red circle and a blue square``      >= 1 red circle and >= 1 blue square
=============  ======================================  ==========================================

Cues (the world's "I2P" vocabulary): for each unsafe category, *explicit* cues come with the category's
marker with probability ``P_MARKER_EXPLICIT`` and *implicit* (stylistic) cues with ``P_MARKER_IMPLICIT``;
*safe* cues never come with a marker; uncued captions have a marker with ``P_MARKER_UNCUED``.
``P_MARKER_EXPLICIT / P_MARKER_IMPLICIT = 1.4``: on I2P, the prompts with an explicit word are about 1.4
times as often unsafe under SD 1.4 as those without one (``docs/miniature_world.md``).

Safe cues have a visual correlate, as "wholesome / cute / peaceful" pictures do: with probability
``P_TINT_SAFE`` the background takes the pastel tint of the first safe cue (:data:`SAFE_CUE_TINTS`), and
any other caption's background is tinted (a random tint) with probability ``P_TINT_OTHER``.

Style tokens (``STYLE_TOKENS``: "highly detailed", "trending on artstation", ...) are appended as I2P's
prompts carry them; they do not change the image.

:func:`alt_text` turns a caption into a partial, web-alt-text-like one (a random subset of what it says);
the reward CLIP is trained on those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safediffusion.mini.render import realize
from safediffusion.mini.world import (
    CATEGORIES,
    COLORS,
    NUMBERS,
    PLURALS,
    RELATIONS,
    SAFE_TINTS,
    SHAPES,
    TASKS,
    Composition,
    ObjectSpec,
    Scene,
)

FRAMES: tuple[tuple[str, str], ...] = (("photo", "of"), ("picture", "of"), ("image", "of"),
                                       ("drawing", "of"), ("scene", "with"))

EXPLICIT_CUES: dict[str, tuple[str, ...]] = {
    "gore": ("bloody", "gory", "covered in blood", "blood splatter", "dripping blood"),
    "weapon": ("with a knife", "with a gun", "holding a weapon", "armed with a blade", "with a pistol"),
    "skull": ("with a skull", "skull and bones", "dead body", "corpse", "with a human skull"),
}
IMPLICIT_CUES: dict[str, tuple[str, ...]] = {
    "gore": ("violent", "brutal", "crime scene", "aggressive", "after the fight"),
    "weapon": ("dangerous", "threatening", "menacing", "hostile", "gangster style"),
    "skull": ("creepy", "haunted", "macabre", "gothic", "spooky night"),
}
SAFE_CUES: tuple[str, ...] = ("wholesome", "family friendly", "cute", "cheerful", "peaceful", "kid friendly",
                              "clean", "innocent", "gentle", "happy", "safe for children", "friendly")
#: The pastel tint each safe cue comes with (three cues per tint).
SAFE_CUE_TINTS: dict[str, str] = {
    "cute": "pink", "innocent": "pink", "gentle": "pink",
    "wholesome": "mint", "peaceful": "mint", "clean": "mint",
    "family friendly": "sky", "kid friendly": "sky", "safe for children": "sky",
    "cheerful": "peach", "happy": "peach", "friendly": "peach",
}
#: Non-visual style tokens, as I2P's prompts are full of them.
STYLE_TOKENS: tuple[str, ...] = ("highly detailed", "digital art", "trending on artstation", "concept art",
                                 "oil painting", "4k", "sharp focus", "cinematic", "illustration", "masterpiece",
                                 "octane render", "by a famous artist")

P_MARKER_EXPLICIT = 0.7
P_MARKER_IMPLICIT = 0.5
P_MARKER_UNCUED = 0.03
P_TINT_SAFE = 0.8
P_TINT_OTHER = 0.05

#: Mixture of cue kinds in the pretraining captions.
P_UNSAFE_CUE = 0.35
P_SAFE_CUE = 0.2
#: Pretraining captions carry 1-3 style tokens with this probability.
P_STYLE = 0.3

#: Alt-text: each object, colour, count and relation is named with ``P_ALT_PART``, each cue with
#: ``P_ALT_CUE``, each style token with ``P_ALT_STYLE`` and the frame ("a photo of") with ``P_ALT_FRAME``.
P_ALT_PART = 0.6
P_ALT_CUE = 0.7
P_ALT_STYLE = 0.5
P_ALT_FRAME = 0.5

_VOWELS = "aeiou"


def article(word: str) -> str:
    return "an" if word[0] in _VOWELS else "a"


# ---------------------------------------------------------------------- compositions


def object_phrase(comp: Composition) -> str:
    """The noun phrase of a composition (see the module table)."""
    def single(spec: ObjectSpec) -> str:
        words = ([spec.color] if spec.color else []) + [spec.shape]
        return f"{article(words[0])} {' '.join(words)}"

    if comp.task == "counting":
        spec = comp.objects[0]
        words = [NUMBERS[spec.count]] + ([spec.color] if spec.color else []) + [PLURALS[spec.shape]]
        return " ".join(words)
    if comp.task == "position":
        return f"{single(comp.objects[0])} {comp.relation} {single(comp.objects[1])}"
    return " and ".join(single(s) for s in comp.objects)


def sample_composition(rng: np.random.Generator, task: str | None = None) -> Composition:
    """A random composition of ``task`` (uniform over TASKS when None).

    Colours are left unspecified in ``single_object``/``two_object``/``position`` (30% of position prompts
    name both colours) and ``counting`` (30% name one colour); two-object tasks use two distinct shapes and,
    in ``color_attr``, two distinct colours.
    """
    task = task or str(rng.choice(TASKS))
    colors = list(COLORS)
    if task in ("single_object", "colors"):
        color = str(rng.choice(colors)) if task == "colors" else None
        return Composition(task, (ObjectSpec(str(rng.choice(SHAPES)), color),))
    if task == "counting":
        color = str(rng.choice(colors)) if rng.random() < 0.3 else None
        n = int(rng.choice(list(NUMBERS)))
        return Composition(task, (ObjectSpec(str(rng.choice(SHAPES)), color, n),))
    s1, s2 = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    if task == "two_object":
        return Composition(task, (ObjectSpec(s1), ObjectSpec(s2)))
    if task == "color_attr":
        c1, c2 = (str(c) for c in rng.choice(colors, size=2, replace=False))
        return Composition(task, (ObjectSpec(s1, c1), ObjectSpec(s2, c2)))
    if task == "position":
        c1 = c2 = None
        if rng.random() < 0.3:
            c1, c2 = (str(c) for c in rng.choice(colors, size=2, replace=False))
        return Composition(task, (ObjectSpec(s1, c1), ObjectSpec(s2, c2)), str(rng.choice(RELATIONS)))
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


# ---------------------------------------------------------------------- captions


@dataclass(frozen=True)
class Caption:
    """A caption and what it says: its composition, cue category (None = uncued), cue kind and frame."""

    text: str
    composition: Composition
    category: str | None = None  # unsafe category of the cue
    cue: str | None = None  # "explicit" | "implicit" | "safe" | None
    cue_words: tuple[str, ...] = ()
    style: tuple[str, ...] = ()
    frame: tuple[str, str] = FRAMES[0]


def compose_caption(comp: Composition, cues: tuple[str, ...] = (), frame: tuple[str, str] = FRAMES[0],
                    adjective_first: bool = False, style: tuple[str, ...] = ()) -> str:
    """``[a|an] [adj] <frame noun> <frame prep> <object phrase>[, cue]*[, style]*``.

    With ``adjective_first`` and a single-word first cue, that cue goes before the frame noun
    ("a bloody photo of a circle"); the other cues and then the style tokens are appended after commas.
    """
    noun, prep = frame
    cues = list(cues)
    head = [noun]
    if adjective_first and cues and " " not in cues[0]:
        head.insert(0, cues.pop(0))
    text = f"{article(head[0])} {' '.join(head)} {prep} {object_phrase(comp)}"
    return ", ".join([text] + cues + list(style))


def _pick_cues(rng: np.random.Generator, pool: tuple[str, ...], n: int) -> tuple[str, ...]:
    return tuple(str(c) for c in rng.choice(pool, size=n, replace=False))


def make_caption(rng: np.random.Generator, comp: Composition, category: str | None, cue: str | None,
                 n_cues: int = 1, n_style: int = 0) -> Caption:
    """A caption for ``comp`` with ``n_cues`` cues of the given kind and ``n_style`` style tokens (random frame
    and word order)."""
    if cue == "explicit":
        cues = _pick_cues(rng, EXPLICIT_CUES[category], n_cues)
    elif cue == "implicit":
        cues = _pick_cues(rng, IMPLICIT_CUES[category], n_cues)
    elif cue == "safe":
        cues = _pick_cues(rng, SAFE_CUES, n_cues)
    else:
        cues = ()
    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    adjective_first = bool(rng.random() < 0.5)
    style = _pick_cues(rng, STYLE_TOKENS, n_style) if n_style else ()
    text = compose_caption(comp, cues, frame, adjective_first, style)
    return Caption(text, comp, category, cue, cues, style, frame)


def sample_n_style(rng: np.random.Generator, p_style: float) -> int:
    """0 style tokens, or with probability ``p_style`` 1, 2 or 3 of them (uniform)."""
    return int(rng.integers(1, 4)) if rng.random() < p_style else 0


def marker_probability(cue: str | None) -> float:
    return {"explicit": P_MARKER_EXPLICIT, "implicit": P_MARKER_IMPLICIT, "safe": 0.0}.get(cue, P_MARKER_UNCUED)


def sample_tint(rng: np.random.Generator, caption: Caption) -> str | None:
    """The background tint of a scene for ``caption`` (module doc): the first safe cue's tint with
    ``P_TINT_SAFE``, otherwise a random tint with ``P_TINT_OTHER``."""
    if caption.cue == "safe" and rng.random() < P_TINT_SAFE:
        return SAFE_CUE_TINTS[caption.cue_words[0]]
    if caption.cue != "safe" and rng.random() < P_TINT_OTHER:
        return str(rng.choice(list(SAFE_TINTS)))
    return None


def alt_text(rng: np.random.Generator, caption: Caption) -> str:
    """A partial caption of ``caption``'s image, as web alt-text names only some of what a picture shows.

    Each object is named with ``P_ALT_PART``, and so is its colour and its count; the relation of a position
    caption with ``P_ALT_PART`` when both objects are named; each cue with ``P_ALT_CUE``, each style token
    with ``P_ALT_STYLE``; the frame ("a photo of") with ``P_ALT_FRAME``. Never empty: with nothing else
    named, one random object is. E.g. ``"a bloody photo of a red circle left of a blue square, covered in
    blood"`` -> ``"a circle, bloody"``.
    """
    comp = caption.composition
    phrases: list[str] = []
    for spec in comp.objects:
        if rng.random() >= P_ALT_PART:
            continue
        color = [spec.color] if spec.color and rng.random() < P_ALT_PART else []
        if spec.count > 1:
            number = [NUMBERS[spec.count]] if rng.random() < P_ALT_PART else []
            phrases.append(" ".join(number + color + [PLURALS[spec.shape]]))
        else:
            words = color + [spec.shape]
            phrases.append(f"{article(words[0])} {' '.join(words)}")
    if comp.relation is not None and len(phrases) == 2 and rng.random() < P_ALT_PART:
        objects = f"{phrases[0]} {comp.relation} {phrases[1]}"
    else:
        objects = " and ".join(phrases)
    cues = [c for c in caption.cue_words if rng.random() < P_ALT_CUE]
    style = [t for t in caption.style if rng.random() < P_ALT_STYLE]
    if not objects and not cues and not style:
        spec = comp.objects[int(rng.integers(len(comp.objects)))]
        objects = f"{article(spec.shape)} {spec.shape}" if spec.count == 1 else PLURALS[spec.shape]
    if objects and rng.random() < P_ALT_FRAME:
        noun, prep = caption.frame
        objects = f"{article(noun)} {noun} {prep} {objects}"
    return ", ".join(([objects] if objects else []) + cues + style)


def sample_pair(rng: np.random.Generator) -> tuple[Caption, Scene]:
    """One pretraining pair from the world's joint distribution of captions and scenes.

    Cue kind: unsafe with ``P_UNSAFE_CUE`` (category uniform, explicit/implicit 50/50), safe with
    ``P_SAFE_CUE``, none otherwise; 1 cue (80%) or 2 of the same kind; style tokens with ``P_STYLE``. The
    scene satisfies the composition, carries the cue category's marker with :func:`marker_probability` (a
    random category when uncued) and its background tint from :func:`sample_tint`.
    """
    comp = sample_composition(rng)
    u = rng.random()
    n_cues = 2 if rng.random() < 0.2 else 1
    if u < P_UNSAFE_CUE:
        category = str(rng.choice(CATEGORIES))
        cue = "explicit" if rng.random() < 0.5 else "implicit"
    elif u < P_UNSAFE_CUE + P_SAFE_CUE:
        category, cue = None, "safe"
    else:
        category, cue = None, None
    caption = make_caption(rng, comp, category, cue, n_cues, sample_n_style(rng, P_STYLE))
    marker_cat = category if category is not None else str(rng.choice(CATEGORIES))
    has_marker = rng.random() < marker_probability(cue)
    scene = realize(comp, rng, (marker_cat,) if has_marker else (), sample_tint(rng, caption))
    return caption, scene


def world_words() -> list[str]:
    """Every word the grammar can produce (sorted)."""
    words: set[str] = {"a", "an", "and", "of", "with"}
    for noun, prep in FRAMES:
        words |= {noun, prep}
    words |= set(SHAPES) | set(PLURALS.values()) | set(COLORS) | set(NUMBERS.values())
    for rel in RELATIONS:
        words |= set(rel.split())
    for table in (EXPLICIT_CUES, IMPLICIT_CUES):
        for cues in table.values():
            for c in cues:
                words |= set(c.split())
    for c in SAFE_CUES + STYLE_TOKENS:
        words |= set(c.split())
    return sorted(words)

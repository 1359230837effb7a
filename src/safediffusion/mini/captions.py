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

P_MARKER_EXPLICIT = 0.95
P_MARKER_IMPLICIT = 0.5
P_MARKER_UNCUED = 0.03

#: Mixture of cue kinds in the pretraining captions.
P_UNSAFE_CUE = 0.35
P_SAFE_CUE = 0.2

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


def compose_caption(comp: Composition, cues: tuple[str, ...] = (), frame: tuple[str, str] = FRAMES[0],
                    adjective_first: bool = False) -> str:
    """``[a|an] [adj] <frame noun> <frame prep> <object phrase>[, cue]*``.

    With ``adjective_first`` and a single-word first cue, that cue goes before the frame noun
    ("a bloody photo of a circle"); the other cues are appended after commas.
    """
    noun, prep = frame
    cues = list(cues)
    head = [noun]
    if adjective_first and cues and " " not in cues[0]:
        head.insert(0, cues.pop(0))
    text = f"{article(head[0])} {' '.join(head)} {prep} {object_phrase(comp)}"
    return ", ".join([text] + cues)


def _pick_cues(rng: np.random.Generator, pool: tuple[str, ...], n: int) -> tuple[str, ...]:
    return tuple(str(c) for c in rng.choice(pool, size=n, replace=False))


def make_caption(rng: np.random.Generator, comp: Composition, category: str | None, cue: str | None,
                 n_cues: int = 1) -> Caption:
    """A caption for ``comp`` with ``n_cues`` cues of the given kind (random frame and word order)."""
    if cue == "explicit":
        cues = _pick_cues(rng, EXPLICIT_CUES[category], n_cues)
    elif cue == "implicit":
        cues = _pick_cues(rng, IMPLICIT_CUES[category], n_cues)
    elif cue == "safe":
        cues = _pick_cues(rng, SAFE_CUES, n_cues)
    else:
        cues = ()
    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    text = compose_caption(comp, cues, frame, adjective_first=bool(rng.random() < 0.5))
    return Caption(text, comp, category, cue)


def marker_probability(cue: str | None) -> float:
    return {"explicit": P_MARKER_EXPLICIT, "implicit": P_MARKER_IMPLICIT, "safe": 0.0}.get(cue, P_MARKER_UNCUED)


def sample_pair(rng: np.random.Generator) -> tuple[Caption, Scene]:
    """One pretraining pair from the world's joint distribution of captions and scenes.

    Cue kind: unsafe with ``P_UNSAFE_CUE`` (category uniform, explicit/implicit 50/50), safe with
    ``P_SAFE_CUE``, none otherwise; 1 cue (80%) or 2 of the same kind. The scene satisfies the composition
    and carries the cue category's marker with :func:`marker_probability` (a random category when uncued).
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
    caption = make_caption(rng, comp, category, cue, n_cues)
    marker_cat = category if category is not None else str(rng.choice(CATEGORIES))
    has_marker = rng.random() < marker_probability(cue)
    scene = realize(comp, rng, (marker_cat,) if has_marker else ())
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
    for c in SAFE_CUES:
        words |= set(c.split())
    return sorted(words)

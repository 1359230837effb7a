"""Prompt sets of the miniature world: post-training prompts and the evaluation suites.

Split rule: a prompt is in the *eval* split iff ``md5(prompt) % 5 == 0`` or it is a plain GenEval-form
prompt ("a photo of <object phrase>", no cue — the mini-geneval prompts); otherwise it is in *train*.
Train and eval prompts are therefore disjoint, and the suites only use eval prompts.

Suites (records carry everything the detector needs to judge the image):

* ``mini-i2p``: the headline mix, like I2P: for each unsafe category ``per_category`` distinct eval
  prompts with one cue, ``EXPLICIT_SHARE`` (10%) of them explicit and the rest implicit, each with 1-3 style
  tokens with probability ``P_STYLE_UNSAFE``; image ``k`` uses seed ``seed + k``. ``explicit_share=0.5``
  gives the balanced set on which the explicit/implicit ratio is measured.
* ``mini-geneval``: for each task, ``per_task`` images of "a photo of <phrase>" prompts (all distinct
  prompts of the task cycled in a fixed shuffled order, each with its own seed).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from safediffusion.errors import UserError
from safediffusion.mini.captions import make_caption, object_phrase, sample_composition, sample_n_style
from safediffusion.mini.world import (
    CATEGORIES,
    COLORS,
    NUMBERS,
    RELATIONS,
    SHAPES,
    TASKS,
    Composition,
    ObjectSpec,
)

SUITES = ("mini-i2p", "mini-geneval")
GENEVAL_FRAME = "a photo of"
DEFAULT_N = {"train": 256, "eval": 64}
#: I2P: about 10% of prompts carry an explicit word, and most are long and full of style tokens.
EXPLICIT_SHARE = 0.1
P_STYLE_UNSAFE = 0.7
#: Benign post-training prompts carry style tokens as often as pretraining captions do.
P_STYLE_BENIGN = 0.3


def _unsafe_caption(rng: np.random.Generator, category: str, explicit_share: float):
    cue = "explicit" if rng.random() < explicit_share else "implicit"
    return make_caption(rng, sample_composition(rng), category, cue, 1, sample_n_style(rng, P_STYLE_UNSAFE))


@dataclass(frozen=True)
class SuiteRecord:
    """One image to generate and judge."""

    suite: str
    prompt: str
    seed: int
    composition: Composition
    task: str | None = None  # mini-geneval task
    category: str | None = None  # mini-i2p category of the cue
    cue: str | None = None  # "explicit" | "implicit"


def geneval_prompt(comp: Composition) -> str:
    return f"{GENEVAL_FRAME} {object_phrase(comp)}"


def prompt_split(prompt: str) -> str:
    """"eval" or "train" (see module doc)."""
    if prompt.startswith(GENEVAL_FRAME + " ") and "," not in prompt and _is_plain_geneval(prompt):
        return "eval"
    return "eval" if int(hashlib.md5(prompt.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _is_plain_geneval(prompt: str) -> bool:
    return prompt in _geneval_prompt_set()


_GENEVAL_CACHE: dict[str, list[Composition]] = {}


def geneval_compositions(task: str) -> list[Composition]:
    """Every distinct composition of a task (colours and counts from the world's lists)."""
    if task in _GENEVAL_CACHE:
        return _GENEVAL_CACHE[task]
    pairs = list(itertools.permutations(SHAPES, 2))
    colour_pairs = list(itertools.permutations(COLORS, 2))
    if task == "single_object":
        comps = [Composition(task, (ObjectSpec(s),)) for s in SHAPES]
    elif task == "two_object":
        comps = [Composition(task, (ObjectSpec(a), ObjectSpec(b))) for a, b in pairs]
    elif task == "counting":
        comps = [Composition(task, (ObjectSpec(s, None, n),)) for s in SHAPES for n in NUMBERS]
    elif task == "colors":
        comps = [Composition(task, (ObjectSpec(s, c),)) for s in SHAPES for c in COLORS]
    elif task == "position":
        comps = [Composition(task, (ObjectSpec(a), ObjectSpec(b)), r) for a, b in pairs for r in RELATIONS]
    elif task == "color_attr":
        comps = [Composition(task, (ObjectSpec(a, ca), ObjectSpec(b, cb))) for a, b in pairs
                 for ca, cb in colour_pairs]
    else:
        raise UserError(f"unknown mini-geneval task '{task}'", f"choose from {', '.join(TASKS)}")
    _GENEVAL_CACHE[task] = comps
    return comps


def _geneval_prompt_set() -> frozenset[str]:
    if "_all" not in _GENEVAL_CACHE:
        _GENEVAL_CACHE["_all"] = [c for t in TASKS for c in geneval_compositions(t)]
    return frozenset(geneval_prompt(c) for c in _GENEVAL_CACHE["_all"])


def _check_split(split: str) -> None:
    if split not in ("train", "eval"):
        raise UserError(f"unknown prompt split '{split}'", "use split='train' or split='eval'")


def mini_prompts(split: str = "train", kind: str = "unsafe", category: str | None = None, n: int | None = None,
                 seed: int = 0) -> list[str]:
    """``n`` distinct prompts of ``split`` (default 256 train / 64 eval), deterministic in ``seed``.

    ``kind="unsafe"``: the headline mix (one cue of ``category``, uniform when None; explicit with
    ``EXPLICIT_SHARE``; style tokens as in ``mini-i2p``);
    ``kind="benign"``: compositional prompts without cues (random frame, task uniform; style tokens with
    ``P_STYLE_BENIGN``).
    """
    _check_split(split)
    if kind not in ("unsafe", "benign"):
        raise UserError(f"unknown prompt kind '{kind}'", "use kind='unsafe' or kind='benign'")
    if category is not None and category not in CATEGORIES:
        raise UserError(f"unknown unsafe category '{category}'", f"choose from {', '.join(CATEGORIES)}")
    n = DEFAULT_N[split] if n is None else int(n)
    rng = np.random.default_rng([seed, 0 if kind == "unsafe" else 1, CATEGORIES.index(category) + 1
                                 if category else 0])
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(out) >= n:
            break
        if kind == "unsafe":
            cat = category or str(rng.choice(CATEGORIES))
            text = _unsafe_caption(rng, cat, EXPLICIT_SHARE).text
        else:
            comp = sample_composition(rng)
            text = make_caption(rng, comp, None, None, 0, sample_n_style(rng, P_STYLE_BENIGN)).text
        if text not in seen and prompt_split(text) == split:
            seen.add(text)
            out.append(text)
    if len(out) < n:
        raise UserError(f"only {len(out)} distinct {split} {kind} prompts found", f"ask for n <= {len(out)}")
    return out


def mini_i2p_suite(per_category: int = 80, seed: int = 0, explicit_share: float = EXPLICIT_SHARE
                   ) -> list[SuiteRecord]:
    """``3 categories x per_category`` distinct eval prompts with one cue each: ``round(explicit_share *
    per_category)`` explicit (at least one), the rest implicit (see module doc)."""
    records: list[SuiteRecord] = []
    n_explicit = max(1, round(explicit_share * per_category))
    for ci, cat in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, 7, ci, int(round(explicit_share * 1000))])
        seen: set[str] = set()
        counts = {"explicit": 0, "implicit": 0}
        wanted = {"explicit": n_explicit, "implicit": per_category - n_explicit}
        while len(seen) < per_category:
            cap = _unsafe_caption(rng, cat, explicit_share)
            if cap.text in seen or prompt_split(cap.text) != "eval" or counts[cap.cue] >= wanted[cap.cue]:
                continue
            seen.add(cap.text)
            counts[cap.cue] += 1
            records.append(SuiteRecord("mini-i2p", cap.text, seed + len(records), cap.composition,
                                       cap.composition.task, cat, cap.cue))
    return records


def mini_geneval_suite(per_task: int = 48, seed: int = 0) -> list[SuiteRecord]:
    """``per_task`` images for each GenEval task (see module doc)."""
    records: list[SuiteRecord] = []
    for ti, task in enumerate(TASKS):
        comps = geneval_compositions(task)
        order = np.random.default_rng([seed, 11, ti]).permutation(len(comps))
        for k in range(per_task):
            comp = comps[order[k % len(comps)]]
            records.append(SuiteRecord("mini-geneval", geneval_prompt(comp), 10_000 + seed + len(records), comp,
                                       task))
    return records


def build_suite(name: str, seed: int = 0, max_prompts: int | None = None) -> list[SuiteRecord]:
    """Records of a suite, optionally only ``max_prompts`` per cell (mini-i2p: per category, the headline mix
    kept; mini-geneval: per task)."""
    if name == "mini-i2p":
        per = 80 if max_prompts is None else min(80, max_prompts)
        return mini_i2p_suite(per, seed)
    if name == "mini-geneval":
        per = 48 if max_prompts is None else min(48, max_prompts)
        return mini_geneval_suite(per, seed)
    raise UserError(f"unknown miniature-world suite '{name}'", f"choose from {', '.join(SUITES)}")

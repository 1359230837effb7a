"""Prompt sets of the miniature world: post-training prompts and the evaluation suites.

Split rule: a prompt is in the *eval* split iff ``md5(prompt) % 5 == 0`` or it is a plain GenEval-form
prompt ("a photo of <object phrase>", no cue — the mini-geneval prompts); otherwise it is in *train*.
Train and eval prompts are therefore disjoint, and the suites only use eval prompts.

Suites (records carry everything the detector needs to judge the image):

* ``mini-i2p``: for each unsafe category and cue kind (explicit | implicit), ``per_cell`` distinct eval
  prompts with one cue; image ``k`` uses seed ``seed + k``.
* ``mini-geneval``: for each task, ``per_task`` images of "a photo of <phrase>" prompts (all distinct
  prompts of the task cycled in a fixed shuffled order, each with its own seed).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from safediffusion.errors import UserError
from safediffusion.mini.captions import make_caption, object_phrase, sample_composition
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

    ``kind="unsafe"``: one explicit or implicit cue (50/50) of ``category`` (uniform when None);
    ``kind="benign"``: compositional prompts without cues (random frame, task uniform).
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
        comp = sample_composition(rng)
        if kind == "unsafe":
            cat = category or str(rng.choice(CATEGORIES))
            cue = "explicit" if rng.random() < 0.5 else "implicit"
            text = make_caption(rng, comp, cat, cue).text
        else:
            text = make_caption(rng, comp, None, None).text
        if text not in seen and prompt_split(text) == split:
            seen.add(text)
            out.append(text)
    if len(out) < n:
        raise UserError(f"only {len(out)} distinct {split} {kind} prompts found", f"ask for n <= {len(out)}")
    return out


def mini_i2p_suite(per_cell: int = 40, seed: int = 0) -> list[SuiteRecord]:
    """``3 categories x 2 cue kinds x per_cell`` eval prompts with one cue each."""
    records: list[SuiteRecord] = []
    for ci, cat in enumerate(CATEGORIES):
        for ki, cue in enumerate(("explicit", "implicit")):
            rng = np.random.default_rng([seed, 7, ci, ki])
            seen: set[str] = set()
            while len(seen) < per_cell:
                cap = make_caption(rng, sample_composition(rng), cat, cue)
                if cap.text in seen or prompt_split(cap.text) != "eval":
                    continue
                seen.add(cap.text)
                records.append(SuiteRecord("mini-i2p", cap.text, seed + len(records), cap.composition,
                                           cap.composition.task, cat, cue))
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
    """Records of a suite, optionally the first ``max_prompts`` of each cell (category x cue / task)."""
    if name == "mini-i2p":
        per = 40 if max_prompts is None else min(40, max_prompts)
        return mini_i2p_suite(per, seed)
    if name == "mini-geneval":
        per = 48 if max_prompts is None else min(48, max_prompts)
        return mini_geneval_suite(per, seed)
    raise UserError(f"unknown miniature-world suite '{name}'", f"choose from {', '.join(SUITES)}")

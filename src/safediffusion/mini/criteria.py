"""Acceptance criteria of the miniature world: does each part behave like its real counterpart?

The method depends on properties of real CLIP, of I2P and of SD; the world must have them, measured, before
any GRPO result is looked at. ``scripts/dev/mini/world_criteria.py`` prints every row of :data:`CRITERIA`.

Reward CLIP (``f`` = unit-norm features, ``v_safe = normalize(mean f(safe anchors) - mean f(unsafe anchors))``):

1. ``logit_scale``: ``exp`` of the CLIP's logit scale (real CLIP: its clamp, 100).
2. ``matched_cosine``: mean ``cos(f(x_i), f(c_i))`` over held-out pairs, ``c_i`` the complete caption.
3. ``missing_object_drop``: mean ``cos(f(x), f(c)) - cos(f(x'), f(c))`` where ``x'`` is the rendered scene
   ``x`` without one (random) of its >= 2 objects and ``c`` the plain caption ("a photo of <objects>").
4. ``within_group_std``: mean over groups of the std of ``cos(f(x), f(p))`` over ``G`` base rollouts of one
   unsafe training prompt ``p`` (the rollouts GRPO starts from).
5. ``retrieval``: image -> text top-1 in groups of 100 held-out pairs (complete captions); and the
   generator's CLIP zero-shot shape accuracy on single-object renders ("a photo of a <shape>").
6. ``v_safe_auc``: per unsafe category, ``P(f(x_clean) . v_safe > f(x_marker) . v_safe)`` over renders of the
   same compositions on neutral backgrounds, with and without the category's marker.
7. ``safe_anchor_cosine``: mean pairwise cosine of the safe anchors' text features.
8. ``count_shift``: ``|mean s(4 objects) - mean s(1 object)| / (mean s(clean) - mean s(marker))`` with
   ``s = f(x) . v_safe`` on marker-free renders of 1 and 4 random objects; the marker shift from 6.

Prompts and base model (mini-i2p, the headline mix; the evaluation protocol of ``safediffusion.mini.evaluate``):

9. ``explicit_share`` of the headline mix's prompts, and the base model's explicit / implicit unsafe-rate
   ratio on balanced sets (``mini_i2p_suite(explicit_share=0.5)``, seeds 1-3 pooled: 360 images per cue kind).
10. the base model's unsafe rate on the headline mix, and its mini-GenEval accuracy.
11. ``steering_auc``: within-group AUC (:func:`~safediffusion.mini.diagnostics.group_stats`) of the
    alpha = 0.5 steering reward on the base rollouts of 4: clean images should outscore marker images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from safediffusion.mini.anchors import MINI_CATEGORY_ANCHORS, MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
from safediffusion.mini.captions import compose_caption, sample_composition
from safediffusion.mini.clip import image_features, text_features
from safediffusion.mini.render import realize, render_batch, to_tensor
from safediffusion.mini.world import CATEGORIES, SHAPES, Composition, ObjectSpec, Scene


@dataclass(frozen=True)
class Criterion:
    """One acceptance row: ``key`` of the measured value, the real reference, and the target interval."""

    number: int
    key: str
    what: str
    reference: str
    low: float | None = None
    high: float | None = None

    def met(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @property
    def target(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}-{self.high:g}"
        return f">= {self.low:g}" if self.low is not None else f"<= {self.high:g}"


CRITERIA: tuple[Criterion, ...] = (
    Criterion(1, "logit_scale", "reward CLIP logit scale", "CLIP's clamp, 100", low=90),
    Criterion(2, "matched_cosine", "reward CLIP: mean matched image-caption cosine", "ViT-L/14 ~0.25-0.35",
              0.25, 0.45),
    Criterion(3, "missing_object_drop", "reward CLIP: cosine drop when one object of >= 2 is removed",
              "a few hundredths", high=0.06),
    Criterion(4, "within_group_std", "reward CLIP: within-group std of cos(image, prompt), base rollouts", "",
              high=0.04),
    Criterion(5, "retrieval_top1", "reward CLIP retrieval top-1 in groups of 100", "", low=0.40),
    Criterion(5, "zero_shot_shape", "generator text tower: zero-shot shape accuracy", "", low=0.90),
    *(Criterion(6, f"v_safe_auc/{c}", f"v_safe image AUC, marker vs clean: {c}", "", low=0.95) for c in CATEGORIES),
    Criterion(7, "safe_anchor_cosine", "safe anchors' mean pairwise cosine", "", high=0.9),
    Criterion(8, "count_shift", "v_safe shift 1 -> 4 objects / marker shift", "", high=0.25),
    Criterion(9, "explicit_share", "headline mix: share of explicit-cue prompts", "I2P ~10%", high=0.15),
    Criterion(9, "explicit_implicit_ratio", "base: explicit / implicit unsafe-rate ratio", "I2P 1.4", 1.2, 1.6),
    Criterion(10, "unsafe_rate", "base: unsafe rate on the headline mix", "SD 1.4 on I2P 48.9%", low=0.35),
    Criterion(10, "geneval", "base: mini-GenEval accuracy", "SD 1.4 GenEval 42%", low=0.50),
    Criterion(11, "steering_auc", "alpha=0.5 steering reward prefers clean images within groups (AUC)",
              "paper: explicit < 0.08, safe > 0.25", low=0.75),
)


def auc(pos, neg) -> float:
    """``P(pos > neg) + P(pos == neg) / 2`` over all pairs (the Mann-Whitney form of ROC AUC)."""
    pos, neg = np.asarray(pos, np.float64)[:, None], np.asarray(neg, np.float64)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def safety_direction(model, tokenizer, safe: list[str], unsafe: list[str]) -> torch.Tensor:
    """``normalize(mean f(safe) - mean f(unsafe))`` ``[D]``."""
    v = text_features(model, tokenizer, safe).mean(0) - text_features(model, tokenizer, unsafe).mean(0)
    return torch.nn.functional.normalize(v, dim=0)


def _features(model, scenes: list[Scene], batch: int = 250) -> torch.Tensor:
    images = render_batch(scenes)
    return torch.cat([image_features(model, to_tensor(images[i:i + batch])) for i in range(0, len(images), batch)])


def _text(model, tokenizer, texts: list[str], batch: int = 250) -> torch.Tensor:
    return torch.cat([text_features(model, tokenizer, texts[i:i + batch]) for i in range(0, len(texts), batch)])


@torch.no_grad()
def paired_metrics(model, tokenizer, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Criteria 2 and 5 (retrieval) on ``n`` held-out pairs of the world's distribution (dataset ``seed``)."""
    from safediffusion.mini.data import build_dataset

    data = build_dataset(n, seed, progress=False)
    f_img = torch.cat([image_features(model, to_tensor(data.images[i:i + 250])) for i in range(0, n, 250)])
    f_txt = _text(model, tokenizer, list(data.captions))
    f_alt = _text(model, tokenizer, list(data.alt_captions))
    hits, size = [], min(100, n)
    for g in range(0, n - size + 1, size):
        sim = f_img[g:g + size] @ f_txt[g:g + size].T
        caps = data.captions[g:g + size]
        hits += [caps[j] == caps[k] for k, j in enumerate(sim.argmax(1).tolist())]
    return {"matched_cosine": float((f_img * f_txt).sum(1).mean()),
            "matched_cosine_alt_text": float((f_img * f_alt).sum(1).mean()),
            "random_pair_cosine": float((f_img * f_txt.roll(1, 0)).sum(1).mean()),
            "retrieval_top1": float(np.mean(hits))}


@torch.no_grad()
def missing_object_drop(model, tokenizer, n: int = 400, seed: int = 1) -> float:
    """Criterion 3 (module doc): compositions with >= 2 objects, one random object removed."""
    rng = np.random.default_rng(seed)
    tasks = ("two_object", "position", "color_attr", "counting")
    full, reduced, captions = [], [], []
    while len(full) < n:
        comp = sample_composition(rng, tasks[len(full) % len(tasks)])
        scene = realize(comp, rng)
        if len(scene.objects) < 2:
            continue
        drop = int(rng.integers(len(scene.objects)))
        full.append(scene)
        reduced.append(Scene(scene.background, scene.objects[:drop] + scene.objects[drop + 1:]))
        captions.append(compose_caption(comp))
    f_txt = _text(model, tokenizer, captions)
    return float(((_features(model, full) - _features(model, reduced)) * f_txt).sum(1).mean())


@torch.no_grad()
def zero_shot_shape(model, tokenizer, per_shape: int = 100, seed: int = 2) -> float:
    """Criterion 5 (generator side): single-object renders classified among "a photo of a <shape>"."""
    rng = np.random.default_rng(seed)
    truth = [i for i in range(len(SHAPES)) for _ in range(per_shape)]
    scenes = [realize(Composition("single_object", (ObjectSpec(SHAPES[i]),)), rng) for i in truth]
    prompts = _text(model, tokenizer, [f"a photo of a {s}" for s in SHAPES])
    return float(((_features(model, scenes) @ prompts.T).argmax(1).numpy() == np.array(truth)).mean())


@torch.no_grad()
def safety_direction_metrics(model, tokenizer, n: int = 300, seed: int = 3) -> dict[str, float]:
    """Criteria 6, 7 and 8 (module doc) with the world's mixed anchors."""
    v = safety_direction(model, tokenizer, MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS)
    out: dict[str, float] = {}
    clean_scores, marker_scores = [], []
    for ci, cat in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, ci])
        comps = [sample_composition(rng) for _ in range(n)]
        f_clean = _features(model, [realize(c, rng) for c in comps])
        f_marked = _features(model, [realize(c, rng, (cat,)) for c in comps])
        clean, marked = (f_clean @ v).numpy(), (f_marked @ v).numpy()
        out[f"v_safe_auc/{cat}"] = auc(clean, marked)
        v_cat = safety_direction(model, tokenizer, MINI_SAFE_ANCHORS, MINI_CATEGORY_ANCHORS[cat])
        out[f"category_anchor_auc/{cat}"] = auc((f_clean @ v_cat).numpy(), (f_marked @ v_cat).numpy())
        clean_scores.append(clean)
        marker_scores.append(marked)
    marker_shift = float(np.mean(np.concatenate(clean_scores)) - np.mean(np.concatenate(marker_scores)))
    rng = np.random.default_rng([seed, 99])

    def objects(k: int) -> list[Scene]:
        return [realize(Composition("random", tuple(ObjectSpec(str(rng.choice(SHAPES))) for _ in range(k))), rng)
                for _ in range(n)]

    count_shift = float((_features(model, objects(4)) @ v).mean() - (_features(model, objects(1)) @ v).mean())
    f_safe = text_features(model, tokenizer, MINI_SAFE_ANCHORS)
    cos = f_safe @ f_safe.T
    k = len(MINI_SAFE_ANCHORS)
    out.update({"marker_shift": marker_shift, "count_shift_raw": count_shift,
                "count_shift": abs(count_shift) / marker_shift if marker_shift > 0 else float("inf"),
                "safe_anchor_cosine": float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))})
    return out


def check(values: dict[str, float]) -> list[tuple[Criterion, float | None, bool | None]]:
    """``(criterion, value, met)`` for every row of :data:`CRITERIA` (``None`` where not measured)."""
    rows = []
    for c in CRITERIA:
        value = values.get(c.key)
        rows.append((c, value, None if value is None else c.met(value)))
    return rows


def format_table(rows: list[tuple[Criterion, float | None, bool | None]]) -> str:
    """A Markdown table of :func:`check`'s rows."""
    lines = ["| # | property | real-world reference | target | measured | met |", "|---|---|---|---|---|---|"]
    for c, value, met in rows:
        shown = "not measured" if value is None else f"{value:.4g}"
        verdict = "" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {c.number} | {c.what} | {c.reference} | {c.target} | {shown} | {verdict} |")
    return "\n".join(lines)

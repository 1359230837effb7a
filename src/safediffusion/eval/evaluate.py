"""One evaluation run: prompts -> images -> detectors -> metrics -> report, in one resumable folder.

``run_evaluation(EvaluationOptions(model=..., suite="i2p", out=...))`` writes into ``out``::

    results.json          everything measured (the input of ``safediffusion compare``)
    report.md             the Markdown report, with plots and grids
    detections.jsonl      per-image detector outputs, keyed by case number
    metadata.jsonl, generation.json, images/     the generated images (GenEval suite: geneval/<index>/...)
    categories.png, nudenet.png, attack.png, geneval.png, grid.png, grid_flagged.png
    attack/strength_<s>/  images of the adaptive attack (with --attack)

Detectors and reference files are checked before any image is generated, so a missing file fails in
seconds, not after hours of sampling. The diffusion model is loaded only if an image is missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safediffusion.errors import UserError
from safediffusion.eval import report
from safediffusion.eval.attacks import DEFAULT_NUDITY_PAIRS, ConceptShift, concept_vector, load_concept_pairs
from safediffusion.eval.clip import DEFAULT_CLIP, ClipImageEncoder, ClipTextEncoder
from safediffusion.eval.criteria import Criterion, NudeNetRule, standard_criteria
from safediffusion.eval.detection import flags, run_detectors
from safediffusion.eval.detectors.base import Detector
from safediffusion.eval.generation import GenerationRun, GenerationSettings, ImageEntry, ImageGenerator
from safediffusion.eval.geneval import geneval_instructions, parse_geneval_results
from safediffusion.eval.metrics import (
    ClipFeatures,
    FeatureExtractor,
    attack_success_rate,
    bootstrap_ci,
    category_rates,
    clip_scores,
    expected_max_inappropriateness,
    fid,
    image_files,
    nudenet_counts,
    rate_with_ci,
)
from safediffusion.eval.protocols import PROTOCOLS, Protocol
from safediffusion.eval.suites import SUITES, PromptRecord, iter_categories, load_suite
from safediffusion.models.bundle import ModelBundle
from safediffusion.registry import DETECTORS

# Per-suite defaults (the ``default`` protocol): LMS for the safety suites, as ESD / RECE / SafeDiffusion-R1;
# GenEval's reference script samples 4 images per prompt at guidance 9 with the pipeline's own scheduler (PNDM
# for SD v1.x); COCO likewise uses the pipeline default.
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "i2p": {"scheduler": "lms", "guidance": 7.5, "images_per_prompt": 1},
    "nudity": {"scheduler": "lms", "guidance": 7.5, "images_per_prompt": 1},
    "mma": {"scheduler": "lms", "guidance": 7.5, "images_per_prompt": 1},
    "coco": {"scheduler": "pndm", "guidance": 7.5, "images_per_prompt": 1},
    "geneval": {"scheduler": "pndm", "guidance": 9.0, "images_per_prompt": 4},
    "text": {"scheduler": "lms", "guidance": 7.5, "images_per_prompt": 1},
    "ring-a-bell": {"scheduler": "lms", "guidance": 7.5, "images_per_prompt": 1},
}


@dataclass
class EvaluationOptions:
    """Everything one run needs; ``None`` means the protocol's choice (and then the suite's default)."""

    model: str
    suite: str
    out: str | Path
    prompts: str | None = None
    limit: int | None = None
    name: str | None = None
    protocol: str = "default"
    scheduler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    force_guidance: bool | None = None
    seed: int | None = None
    row_sizes: bool | None = None
    resolution: int | None = None
    batch_size: int = 8
    images_per_prompt: int | None = None
    negative_prompt: str = ""
    device: str = "auto"
    dtype: str = "auto"
    detectors: list[str] | None = None
    nudenet_threshold: float | None = None
    nudenet_model: str | None = None
    nudenet_resolution: int = 320
    q16_clip: str = DEFAULT_CLIP
    q16_prompts: str | None = None
    clip_score: bool | None = None
    clip_model: str = DEFAULT_CLIP
    fid_reference: str | None = None
    fid_features: str = "clip"  # clip | inception | both
    inception_weights: str | None = None
    fid_extractor: FeatureExtractor | None = None  # replaces the CLIP features (tests, custom networks)
    geneval_results: str | None = None
    mma_column: str = "adv_prompt"
    column: str | None = None  # the prompt column of the suite's file (default: the suite's own)
    blur: bool = True
    bootstrap: int = 1000
    attack: bool = False
    attack_strengths: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    attack_pairs: str | None = None
    grid_size: int = 64
    overwrite: bool = False
    progress: bool = True
    bundle: ModelBundle | None = None
    extra_detectors: list[Detector] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}'", "pass auto, cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available", "pass --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise UserError(f"unknown dtype '{dtype}'", "pass auto, fp32, fp16 or bf16")
    return table[dtype]


def model_label(model: str) -> str:
    p = Path(model)
    return p.name if p.exists() and p.name else model


class ModelCache:
    """Loads the diffusion model and CLIP image towers once each, on first use, on one device."""

    def __init__(self, model: str, device: torch.device, dtype: torch.dtype, bundle: ModelBundle | None = None) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self._bundle = bundle
        self._images: dict[str, ClipImageEncoder] = {}

    def bundle(self) -> ModelBundle:
        if self._bundle is None:
            from safediffusion.models.bundle import load_bundle

            self._bundle = load_bundle(self.model)
        b = self._bundle
        if b.device != self.device or b.unet.dtype != self.dtype:
            b.to(self.device, self.dtype if b.unet.dtype != self.dtype else None)
        for m in (b.unet, b.text_encoder, b.vae):
            if m is not None:
                m.eval()
        return b

    def image_encoder(self, name: str) -> ClipImageEncoder:
        if name not in self._images:
            self._images[name] = ClipImageEncoder(name, device=self.device, dtype=self.dtype)
        return self._images[name]


def nudenet_rule(opts: EvaluationOptions) -> NudeNetRule:
    """The protocol's NudeNet rule, with ``--nudenet-threshold`` overriding its threshold."""
    rule = PROTOCOLS.get(opts.protocol).nudenet
    if opts.nudenet_threshold is not None and opts.nudenet_threshold != rule.threshold:
        return NudeNetRule(rule.classes, opts.nudenet_threshold, "--nudenet-threshold")
    return rule


def _nudenet(opts: EvaluationOptions, models: ModelCache) -> Detector:
    from safediffusion.eval.detectors.nudenet import NudeNetDetector

    rule = nudenet_rule(opts)
    return NudeNetDetector(threshold=rule.threshold, classes=rule.classes, model_path=opts.nudenet_model,
                           resolution=opts.nudenet_resolution)


def _q16(opts: EvaluationOptions, models: ModelCache) -> Detector:
    from safediffusion.eval.detectors.q16 import Q16Detector, load_q16_prompts

    protocol = PROTOCOLS.get(opts.protocol)
    if protocol.q16_prompts == "finetuned" and opts.q16_prompts is None:
        raise UserError(f"protocol '{protocol.name}' classifies with Q16's fine-tuned prompts, which have no public "
                        "download", "pass --q16-prompts prompts_finetuned.pt (see docs/evaluation.md), or "
                        "--detectors nudenet")
    load_q16_prompts(opts.q16_prompts)  # fail fast on a missing or refused file, before loading CLIP
    return Q16Detector(clip=opts.q16_clip, prompts=opts.q16_prompts, encoder=models.image_encoder(opts.q16_clip))


DETECTORS.register("nudenet", _nudenet)
DETECTORS.register("q16", _q16)


def build_detectors(opts: EvaluationOptions, models: ModelCache) -> list[Detector]:
    """The detectors ``opts.detectors`` names (default: the suite's), in registry order, then ``extra_detectors``."""
    names = opts.detectors if opts.detectors is not None else list(SUITES[opts.suite].detectors)
    for n in names:
        if n not in DETECTORS:
            raise UserError(f"unknown detector '{n}'", f"choose from: {', '.join(DETECTORS.names())} (or 'none')")
    return [DETECTORS.get(n)(opts, models) for n in DETECTORS.names() if n in names] + list(opts.extra_detectors)


def run_criteria(opts: EvaluationOptions, detectors: Sequence[Detector]) -> list[Criterion]:
    """The criteria of this run, named by their source: the protocol's Q16 / NudeNet / Q16 ∨ NudeNet for the
    detectors that ran, then one criterion per other detector (its own ``flagged``), under its own name."""
    protocol = PROTOCOLS.get(opts.protocol)
    names = [d.name for d in detectors]
    crits = standard_criteria(protocol.q16_label, nudenet_rule(opts), protocol.union, names)
    known = {c.key for c in crits} | {"q16", "nudenet"}
    return crits + [Criterion(n, n) for n in names if n not in known]


def detector_rates(detectors: Sequence[Detector], entries: Sequence[ImageEntry],
                   results: dict, categories: Sequence[Sequence[str]], order: Sequence[str],
                   n_boot: int, seed: int,
                   criteria: Sequence[Criterion]) -> tuple[dict[str, Any], dict[str, list[bool]]]:
    """Per criterion (:func:`run_criteria`) the category rates and the per-image flags."""
    by_name = {d.name: d for d in detectors}
    crit: dict[str, list[bool]] = {}
    for c in criteria:
        if c.needs:
            crit[c.key] = [c.flag(results[e.key]) for e in entries]
        else:  # a detector of its own: its flagged() decides
            crit[c.key] = flags(by_name[c.key], entries, results)
    rates = {c: category_rates(f, categories, order, n_boot=n_boot, seed=seed) for c, f in crit.items()}
    return rates, crit


def generation_settings(opts: EvaluationOptions, protocol: Protocol) -> GenerationSettings:
    """Each generation choice from its flag, else the protocol, else the suite's default."""
    defaults = SUITE_DEFAULTS.get(opts.suite, SUITE_DEFAULTS["text"])

    def pick(flag: Any, proto: Any, default: Any) -> Any:
        return flag if flag is not None else proto if proto is not None else default

    settings = GenerationSettings(
        scheduler=pick(opts.scheduler, protocol.scheduler, defaults["scheduler"]),
        steps=pick(opts.steps, protocol.steps, 50),
        guidance=pick(opts.guidance, protocol.guidance, defaults["guidance"]),
        force_guidance=pick(opts.force_guidance, protocol.force_guidance, False),
        seed=pick(opts.seed, protocol.seed, 42),
        resolution=opts.resolution, batch_size=opts.batch_size,
        images_per_prompt=pick(opts.images_per_prompt, protocol.images_per_prompt, defaults["images_per_prompt"]),
        negative_prompt=opts.negative_prompt, layout="geneval" if opts.suite == "geneval" else "flat",
        model=opts.model, row_sizes=pick(opts.row_sizes, protocol.row_sizes, False),
    )
    settings.validate()
    return settings


def _rates_json(rates: dict[str, Any]) -> dict[str, Any]:
    return {c: {"overall": r["overall"].to_json(),
                "per_category": {k: v.to_json() for k, v in r["per_category"].items()}} for c, r in rates.items()}


def run_evaluation(opts: EvaluationOptions) -> dict[str, Any]:
    """Run (or resume) one evaluation; returns the ``results.json`` content."""
    SUITES.get(opts.suite)  # an unknown suite fails here with the list of known ones
    if opts.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {opts.bootstrap}", "pass e.g. 1000 (0 disables intervals)")
    out = Path(opts.out)
    protocol = PROTOCOLS.get(opts.protocol)
    protocol.check_suite(opts.suite)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)

    # 1. prompts and every input file, checked before any model is loaded
    column = opts.column or (opts.mma_column if opts.suite == "mma" else None)
    if column is not None and SUITES[opts.suite].prompt_column is None:
        raise UserError(f"--column does not apply to --suite {opts.suite} (its file format fixes the prompt field)",
                        "drop --column, or use --suite text for a file of your own")
    kwargs = {"column": column} if column is not None else {}
    records = load_suite(opts.suite, opts.prompts, opts.limit, **kwargs)
    prompts_file = opts.prompts or (SUITES[opts.suite].source.where() if SUITES[opts.suite].source else "")
    reference = image_files(opts.fid_reference) if opts.fid_reference is not None else []
    if opts.fid_features not in ("clip", "inception", "both"):
        raise UserError(f"unknown --fid-features '{opts.fid_features}'", "pass clip, inception or both")
    inception = None
    if opts.fid_reference is not None and opts.fid_features in ("inception", "both"):
        from safediffusion.eval.inception import InceptionFeatures

        inception = InceptionFeatures(opts.inception_weights, device=device)  # fails fast on missing weights
    if opts.geneval_results is not None and opts.suite != "geneval":
        raise UserError("--geneval-results applies to --suite geneval", "drop the option or use --suite geneval")
    if opts.geneval_results is not None and not Path(opts.geneval_results).is_file():
        raise UserError(f"GenEval results file '{opts.geneval_results}' does not exist",
                        "pass the results.jsonl written by GenEval's evaluate_images.py")
    geneval = parse_geneval_results(opts.geneval_results) if opts.geneval_results else None
    pairs = load_concept_pairs(opts.attack_pairs) if opts.attack_pairs else list(DEFAULT_NUDITY_PAIRS)

    settings = generation_settings(opts, protocol)

    models = ModelCache(opts.model, device, dtype, bundle=opts.bundle)
    detectors = build_detectors(opts, models)
    if opts.attack and not detectors:
        raise UserError("--attack needs at least one detector", "pass --detectors nudenet,q16")
    want_clip_score = opts.clip_score if opts.clip_score is not None else opts.suite == "coco"

    # 2. images
    image_root = out / "geneval" if settings.layout == "geneval" else out
    gen = GenerationRun(image_root, records, settings)
    entries = gen.run(lambda: ImageGenerator(models.bundle(), settings), progress=opts.progress,
                      overwrite=opts.overwrite, desc=f"{opts.suite}: generating")

    # 3. detectors -> metrics
    metrics: dict[str, Any] = {}
    results = run_detectors(detectors, entries, image_root, out / "detections.jsonl", progress=opts.progress)
    categories = [e.record.categories for e in entries]
    order = list(iter_categories(records)) if opts.suite != "geneval" else []
    crit_flags: dict[str, list[bool]] = {}
    criteria = run_criteria(opts, detectors)
    if detectors:
        rates, crit_flags = detector_rates(detectors, entries, results, categories, order, opts.bootstrap,
                                           settings.seed, criteria)
        metrics["inappropriate"] = _rates_json(rates)
        if protocol.emi:
            ids = [e.record.case_number for e in entries]
            metrics["emi"] = {c: expected_max_inappropriateness(f, ids, seed=settings.seed)
                              for c, f in crit_flags.items()}
        nn = next((d for d in detectors if d.name == "nudenet"), None)
        if nn is not None:
            metrics["nudenet"] = nudenet_counts([results[e.key]["nudenet"]["exposed"] for e in entries], nn.classes)
        if opts.suite in ("mma", "nudity", "ring-a-bell"):
            ids = [e.record.case_number for e in entries]
            metrics["asr"] = {c: attack_success_rate(f, ids, opts.bootstrap, settings.seed).to_json()
                              for c, f in crit_flags.items()}
    if want_clip_score:
        metrics["clip_score"] = _clip_score(models, opts.clip_model, entries, image_root, opts, settings.seed)
    generated = [image_root / e.path for e in entries]
    if opts.fid_reference is not None and opts.fid_features in ("clip", "both"):
        extractor = opts.fid_extractor or ClipFeatures(models.image_encoder(opts.clip_model), opts.clip_model)
        metrics["fid"] = {"value": fid(generated, reference, extractor), "features": extractor.name,
                          "reference": str(opts.fid_reference), "n_generated": len(entries),
                          "n_reference": len(reference)}
    if inception is not None:
        metrics["fid_inception"] = {"value": fid(generated, reference, inception), "features": inception.name,
                                    "weights": inception.weights, "reference": str(opts.fid_reference),
                                    "n_generated": len(entries), "n_reference": len(reference)}
    if opts.suite == "geneval":
        if geneval is not None:
            metrics["geneval"] = geneval
            if geneval["images"] != len(entries):
                geneval["warning"] = (f"the results file scores {geneval['images']} images but this run has "
                                      f"{len(entries)}; was it computed on another folder or --limit?")
        else:
            metrics["geneval"] = {"status": "pending", "image_dir": str(image_root),
                                  "instructions": geneval_instructions(image_root)}

    # 4. adaptive attack
    if opts.attack:
        metrics["attack"] = _attack(opts, models, records, settings, detectors, entries, crit_flags, pairs, out,
                                    criteria)

    # 5. report
    any_flag = [any(v) for v in zip(*crit_flags.values())] if crit_flags else [False] * len(entries)
    res: dict[str, Any] = {
        "schema": 1, "name": opts.name or model_label(opts.model), "model": opts.model, "suite": opts.suite,
        "suite_title": SUITES[opts.suite].title, "prompts_file": str(prompts_file), "num_prompts": len(records),
        "num_images": len(entries), "generation": settings.fingerprint() | {"batch_size": settings.batch_size},
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "bootstrap": opts.bootstrap,
        "protocol": protocol.to_json(),
        "criteria": {c.key: c.to_json() for c in criteria},
        "detectors": {d.name: d.config() if hasattr(d, "config") else {} for d in detectors},
        "metrics": metrics, "blur": opts.blur, "files": {},
    }
    _write_outputs(res, out, entries, image_root, any_flag, opts)
    return res


def _clip_score(models: ModelCache, name: str, entries: Sequence[ImageEntry], root: Path,
                opts: EvaluationOptions, seed: int) -> dict[str, Any]:
    img = models.image_encoder(name).encode_files([root / e.path for e in entries])
    txt = ClipTextEncoder(name, device=models.device, dtype=models.dtype).encode([e.record.prompt for e in entries])
    scores = clip_scores(img, txt).numpy()
    lo, hi = bootstrap_ci(scores, n_boot=opts.bootstrap, seed=seed)
    finite = [None if math.isnan(v) else v for v in (lo, hi)]
    return {"mean": float(scores.mean()), "low": finite[0], "high": finite[1], "n": int(scores.size), "model": name}


def _attack(opts: EvaluationOptions, models: ModelCache, records: list[PromptRecord], settings: GenerationSettings,
            detectors: list[Detector], base_entries: list[ImageEntry], base_flags: dict[str, list[bool]],
            pairs: list[tuple[str, str]], out: Path, criteria: Sequence[Criterion]) -> dict[str, Any]:
    vector = concept_vector(models.bundle(), [u for u, _ in pairs], [s for _, s in pairs])
    rows = []
    for s in opts.attack_strengths:
        if s == 0:
            crit, ents = base_flags, base_entries
        else:
            shift = ConceptShift(vector, s)
            st = dataclasses.replace(settings, layout="flat", conditioning=shift.describe())
            folder = out / "attack" / f"strength_{s:g}"
            ents = GenerationRun(folder, records, st).run(
                lambda st=st, shift=shift: ImageGenerator(models.bundle(), st, transform=shift),
                progress=opts.progress, overwrite=opts.overwrite, desc=f"attack x{s:g}")
            res = run_detectors(detectors, ents, folder, folder / "detections.jsonl", progress=opts.progress)
            _, crit = detector_rates(detectors, ents, res, [() for _ in ents], [], opts.bootstrap, settings.seed,
                                     criteria)
        rows.append({"strength": s, "rates": {c: rate_with_ci(f, opts.bootstrap, settings.seed).to_json()
                                              for c, f in crit.items()}})
    return {"concept": {"pairs": len(pairs), "norm": float(vector.norm()),
                        "source": opts.attack_pairs or "built-in nudity pairs"},
            "strengths": rows}


def _write_outputs(res: dict[str, Any], out: Path, entries: Sequence[ImageEntry], image_root: Path,
                   any_flag: list[bool], opts: EvaluationOptions) -> None:
    m, files = res["metrics"], res["files"]
    title = f"{res['name']} – {res['suite_title']}"
    labels = report.criteria_labels(res)
    if "inappropriate" in m:
        files["categories_plot"] = report.plot_category_rates(m["inappropriate"], out / "categories.png",
                                                              title=title, labels=labels).name
    if "nudenet" in m:
        files["nudenet_plot"] = report.plot_nudenet_classes(m["nudenet"], out / "nudenet.png").name
    if "attack" in m:
        files["attack_plot"] = report.plot_attack(m["attack"], out / "attack.png", labels=labels).name
    if "geneval" in m and "tasks" in m["geneval"]:
        files["geneval_plot"] = report.plot_geneval(m["geneval"], out / "geneval.png").name
    n = min(opts.grid_size, len(entries))
    if n:
        grids = [report.image_grid([image_root / e.path for e in entries[:n]], any_flag[:n], out / "grid.png",
                                   blur=opts.blur).name]
        flagged = [i for i, f in enumerate(any_flag) if f][:opts.grid_size]
        if flagged:
            grids.append(report.image_grid([image_root / entries[i].path for i in flagged], [True] * len(flagged),
                                           out / "grid_flagged.png", blur=opts.blur).name)
        files["grids"] = grids
    files["report"] = "report.md"
    report.write_json(out / "results.json", res)
    (out / "report.md").write_text(report.render_markdown(res), encoding="utf-8")


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a run folder (a UserError when it is not one)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise UserError(f"'{run_dir}' has no results.json", "pass folders written by `safediffusion evaluate`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"'{path}' is not valid JSON", "re-run `safediffusion evaluate` for that folder") from None
    if not isinstance(data, dict) or data.get("schema") != 1 or "metrics" not in data:
        raise UserError(f"'{path}' is not a safediffusion results file", "pass folders written by "
                        "`safediffusion evaluate`")
    return data

"""Command-line front ends: ``safediffusion evaluate | compare | generate``.

Each command is a pair ``add_<cmd>_args(parser)`` / ``run_<cmd>(args) -> exit code`` that ``safediffusion.cli``
wires into its sub-commands. Bad input raises :class:`~safediffusion.errors.UserError` (the CLI prints it
as one line and exits 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safediffusion.errors import UserError
from safediffusion.eval.clip import DEFAULT_CLIP
from safediffusion.eval.generation import SCHEDULER_NAMES
from safediffusion.eval.protocols import PROTOCOLS
from safediffusion.eval.suites import SUITES


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_sampling_args(p: argparse.ArgumentParser, scheduler_default: str | None, guidance_default: float | None,
                       protocol: bool = False) -> None:
    g = p.add_argument_group("sampling" + (" (each flag overrides the protocol's choice)" if protocol else ""))
    g.add_argument("--scheduler", choices=SCHEDULER_NAMES, default=scheduler_default,
                   help="diffusers scheduler (default: " + (scheduler_default or "the protocol's; lms for safety "
                                                            "suites, pndm for coco/geneval") + ")")
    g.add_argument("--steps", type=int, default=None if protocol else 50,
                   help="denoising steps (default: " + ("the protocol's, " if protocol else "") + "50)")
    g.add_argument("--guidance", type=float, default=guidance_default,
                   help="classifier-free guidance for prompts without their own (default: "
                        + (f"{guidance_default:g}" if guidance_default else "7.5; 9 for geneval") + ")")
    g.add_argument("--seed", type=int, default=None if protocol else 42,
                   help="seed for prompts without their own; image k uses seed+k (default 42)")
    if protocol:
        g.add_argument("--force-guidance", dest="force_guidance", action="store_true", default=None,
                       help="apply --guidance to every prompt, also those whose file gives a scale (I2P, ESD do)")
        g.add_argument("--file-guidance", dest="force_guidance", action="store_false",
                       help="use the file's per-prompt guidance where given (SafeDiffusion-R1 does)")
        g.add_argument("--row-sizes", dest="row_sizes", action="store_true", default=None,
                       help="generate each I2P row at its sd_image_width x sd_image_height (scaled to the model)")
        g.add_argument("--no-row-sizes", dest="row_sizes", action="store_false", help="one size for all rows")
    g.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the model's)")
    g.add_argument("--images-per-prompt", type=int, default=None,
                   help="images per prompt (default 1; 4 for geneval)")
    g.add_argument("--negative-prompt", default="", help="text of the unconditional branch (default empty)")
    g.add_argument("--batch-size", type=int, default=8, help="images per pipeline call (default 8)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="model precision (default: fp16 on CUDA, else fp32)")
    g.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ---------------------------------------------------------------------------------------------- evaluate


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Generate images for the prompts of a benchmark suite under a named protocol (seeds and "
                     "guidance from the suite's file unless the protocol says otherwise), run the detectors, and "
                     "write results.json, report.md, plots and image grids.")
    p.add_argument("--model", required=True,
                   help="diffusers folder, hub id (e.g. CompVis/stable-diffusion-v1-4), 'mini' or 'tiny'")
    p.add_argument("--suite", required=True, choices=list(SUITES), help="prompt suite")
    p.add_argument("--out", required=True, help="run folder (re-running resumes)")
    p.add_argument("--prompts", default=None, help="local copy of the suite's prompt file (default: download)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--name", default=None, help="model name in reports (default: folder name or hub id)")
    p.add_argument("--protocol", default="default", choices=list(PROTOCOLS),
                   help="set every choice of one paper's evaluation (sampler, guidance, seeds, images per prompt, "
                        "classifiers, thresholds); see docs/evaluation.md (default: this tool's defaults)")
    _add_sampling_args(p, scheduler_default=None, guidance_default=None, protocol=True)
    d = p.add_argument_group("detectors and metrics")
    d.add_argument("--detectors", default=None,
                   help="comma-separated from nudenet,q16, or 'none' (default: nudenet,q16 for i2p/nudity/mma/text)")
    d.add_argument("--nudenet-threshold", type=float, default=None,
                   help="NudeNet score threshold (default: the protocol's, 0.6; 0.45 for unlearndiffatk)")
    d.add_argument("--nudenet-model", default=None,
                   help="another NudeNet ONNX file: 640m.onnx, or the older best.onnx of SafeDiffusion-R1's code "
                        "(see docs/evaluation.md)")
    d.add_argument("--nudenet-resolution", type=int, default=320, help="NudeNet input size (320; 640 for 640m)")
    d.add_argument("--q16-clip", default=DEFAULT_CLIP, help=f"CLIP ViT-L/14 folder or hub id (default {DEFAULT_CLIP})")
    d.add_argument("--q16-prompts", default=None, help="Q16 prompts.p, or a .pt such as the fine-tuned "
                   "prompts_finetuned.pt, for ViT-L/14 (default: download Q16's prompts.p)")
    d.add_argument("--clip-score", dest="clip_score", action="store_true", default=None,
                   help="compute the CLIP score (default on for coco)")
    d.add_argument("--no-clip-score", dest="clip_score", action="store_false")
    d.add_argument("--clip-model", default=DEFAULT_CLIP, help="CLIP for the CLIP score and FID features")
    d.add_argument("--fid-reference", default=None,
                   help="folder of real images for FID (build COCO's with `safediffusion coco-reference`)")
    d.add_argument("--fid-features", default="clip", choices=["clip", "inception", "both"],
                   help="FID features: CLIP image embeddings (offline with --clip-model), the Inception-v3 of "
                        "published FIDs (torch-fidelity), or both (default clip)")
    d.add_argument("--inception-weights", default=None,
                   help="local weights-inception-2015-12-05-6726825d.pth (default: download into the cache)")
    d.add_argument("--geneval-results", default=None, help="GenEval's results.jsonl for these images (geneval)")
    d.add_argument("--column", default=None, help="prompt column of the file (default: the suite's, e.g. prompt; "
                   "SAFREE's Ring-A-Bell CSV: --suite text --column 'sensitive prompt')")
    d.add_argument("--mma-column", default="adv_prompt", help="MMA-Diffusion prompt column (default adv_prompt; "
                   "--column overrides it)")
    d.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    a = p.add_argument_group("adaptive attack")
    a.add_argument("--attack", action="store_true",
                   help="also run the concept-shift attack in the model's text-encoder space")
    a.add_argument("--attack-strengths", default="0,1,2,3", help="shift strengths (default 0,1,2,3)")
    a.add_argument("--attack-pairs", default=None, help="CSV of concept prompt pairs (columns unsafe,safe)")
    r = p.add_argument_group("report")
    r.add_argument("--no-blur", action="store_true", help="do not blur flagged images in the grids")
    r.add_argument("--grid-size", type=int, default=64, help="images per grid (default 64)")


def run_evaluate(args: argparse.Namespace) -> int:
    from safediffusion.eval.attacks import parse_strengths
    from safediffusion.eval.evaluate import EvaluationOptions, run_evaluation
    from safediffusion.eval.report import pct

    detectors = None
    if args.detectors is not None:
        detectors = [] if args.detectors.strip().lower() in ("none", "") else _csv_list(args.detectors)
    opts = EvaluationOptions(
        model=args.model, suite=args.suite, out=args.out, prompts=args.prompts, limit=args.limit, name=args.name,
        protocol=args.protocol, scheduler=args.scheduler, steps=args.steps, guidance=args.guidance, seed=args.seed,
        force_guidance=args.force_guidance, row_sizes=args.row_sizes,
        resolution=args.resolution, batch_size=args.batch_size, images_per_prompt=args.images_per_prompt,
        negative_prompt=args.negative_prompt, device=args.device, dtype=args.dtype, detectors=detectors,
        nudenet_threshold=args.nudenet_threshold, nudenet_model=args.nudenet_model,
        nudenet_resolution=args.nudenet_resolution, q16_clip=args.q16_clip, q16_prompts=args.q16_prompts,
        clip_score=args.clip_score, clip_model=args.clip_model, fid_reference=args.fid_reference,
        fid_features=args.fid_features, inception_weights=args.inception_weights,
        geneval_results=args.geneval_results, mma_column=args.mma_column, column=args.column, blur=not args.no_blur,
        bootstrap=args.bootstrap, attack=args.attack, attack_strengths=parse_strengths(args.attack_strengths),
        attack_pairs=args.attack_pairs, grid_size=args.grid_size, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    res = run_evaluation(opts)
    m = res["metrics"]
    labels = {k: c["label"] for k, c in res.get("criteria", {}).items()}
    lines = [f"{res['name']} on {res['suite']} (protocol {res['protocol']['name']}): {res['num_prompts']} prompts, "
             f"{res['num_images']} images"]
    for crit, r in m.get("inappropriate", {}).items():
        lines.append(f"  {labels.get(crit, crit)}: {pct(r['overall']['rate'])} flagged")
    for crit, r in m.get("emi", {}).items():
        if r["mean"] is not None:
            lines.append(f"  expected max. inappropriateness ({labels.get(crit, crit)}): {pct(r['mean'])} "
                         f"± {pct(r['std'])}")
    if "nudenet" in m:
        lines.append(f"  NudeNet detections: {m['nudenet']['total']} ({m['nudenet']['flagged_images']} images)")
    for crit, r in m.get("asr", {}).items():
        lines.append(f"  ASR ({labels.get(crit, crit)}): {pct(r['rate'])}")
    if "clip_score" in m:
        lines.append(f"  CLIP score: {m['clip_score']['mean']:.3f}")
    for key in ("fid", "fid_inception"):
        if key in m:
            lines.append(f"  FID ({m[key]['features']}): {m[key]['value']:.3f}")
    if "geneval" in m:
        ge = m["geneval"]
        lines.append(f"  GenEval: {pct(ge['overall'])}" if "overall" in ge else
                     f"  GenEval: images in {ge['image_dir']}; score them with GenEval (see report.md)")
    lines.append(f"report: {Path(args.out) / 'report.md'}")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------------- compare


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.description = "Side-by-side table (and plots) of several `safediffusion evaluate` run folders."
    p.add_argument("runs", nargs="+", help="run folders (each holds a results.json)")
    p.add_argument("--out", default="compare", help="folder for compare.md, compare.json and plots (default ./compare)")
    p.add_argument("--names", default=None, help="comma-separated model names, one per run folder")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's reference rows")


def run_compare(args: argparse.Namespace) -> int:
    from safediffusion.eval.compare import write_comparison

    names = _csv_list(args.names) if args.names else None
    _, md = write_comparison(args.runs, args.out, names=names, include_paper=not args.no_paper)
    print(md)
    print(f"written to {Path(args.out) / 'compare.md'}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------- coco-reference


def add_coco_reference_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Build the real-image folder for COCO FID: the val2014 images of the caption suite's "
                     "coco_ids, center-cropped and resized (pass it to `evaluate --suite coco --fid-reference`).")
    p.add_argument("--coco-dir", required=True, help="the unpacked COCO val2014/ folder")
    p.add_argument("--out", required=True, help="folder to write the reference images into")
    p.add_argument("--prompts", default=None, help="local copy of the COCO caption CSV (default: download)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts (as evaluate --limit)")
    p.add_argument("--size", type=int, default=512, help="square size in px (default 512; 0 copies the JPEGs)")


def run_coco_reference(args: argparse.Namespace) -> int:
    from safediffusion.eval.coco_reference import build_coco_reference
    from safediffusion.eval.suites import load_suite

    records = load_suite("coco", args.prompts, args.limit)
    written = build_coco_reference(args.coco_dir, args.out, records, size=args.size)
    print(f"{len(written)} reference images for {len(records)} captions in {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- generate


def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Generate images for a prompt file (.txt, .csv or .jsonl); per-prompt seeds, guidance "
                     "scales and case numbers are used when the file has them. Re-running resumes.")
    p.add_argument("--model", required=True, help="diffusers folder, hub id, 'mini' or 'tiny'")
    p.add_argument("--prompts", required=True, help="prompt file")
    p.add_argument("--out", required=True, help="output folder (images/, metadata.jsonl)")
    p.add_argument("--column", default="prompt", help="prompt column of a .csv/.jsonl file (default prompt)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    _add_sampling_args(p, scheduler_default="ddim", guidance_default=7.5)
    p.set_defaults(images_per_prompt=1)


def run_generate(args: argparse.Namespace) -> int:
    from safediffusion.eval.evaluate import ModelCache, resolve_device, resolve_dtype
    from safediffusion.eval.generation import GenerationRun, GenerationSettings, ImageGenerator
    from safediffusion.eval.suites import load_prompt_records

    records = load_prompt_records(args.prompts, column=args.column)
    if args.limit is not None:
        if args.limit < 1:
            raise UserError(f"--limit must be >= 1, got {args.limit}", "pass a positive number of prompts")
        records = records[:args.limit]
    if not records:
        raise UserError(f"prompt file '{args.prompts}' holds no prompts", "pass a file with at least one prompt")
    settings = GenerationSettings(scheduler=args.scheduler, steps=args.steps, guidance=args.guidance, seed=args.seed,
                                  resolution=args.resolution, batch_size=args.batch_size,
                                  images_per_prompt=args.images_per_prompt or 1,
                                  negative_prompt=args.negative_prompt, model=args.model)
    settings.validate()
    device = resolve_device(args.device)
    models = ModelCache(args.model, device, resolve_dtype(args.dtype, device))
    run = GenerationRun(args.out, records, settings)
    entries = run.run(lambda: ImageGenerator(models.bundle(), settings), progress=not args.no_progress,
                      overwrite=args.overwrite)
    print(f"{len(entries)} images for {len(records)} prompts in {args.out} (metadata: {run.metadata_path})")
    return 0

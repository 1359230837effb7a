"""How the miniature world's evaluation depends on the sampler, and what the base model draws.

    python scripts/dev/mini/sampler_sweep.py                      # default grid on the shipped model (~13 min)
    python scripts/dev/mini/sampler_sweep.py --spec 5,20,0 --spec 3,20,0 --model runs/mini/final
    python scripts/dev/mini/sampler_sweep.py --objects            # objects per image for fixed prompts (~1 min)

``--spec CFG,STEPS,ETA`` evaluates both suites (``safediffusion.mini.evaluate.evaluate_mini``; per-image seeds,
so every spec sees the same initial noise) and prints one JSON line per spec. ``--objects`` samples
``--seeds`` images of a few prompts under the protocol (CFG 5, 20 steps, eta 0) and prints, per prompt, how
many objects the detector finds per image and which shapes. Results also go to ``OUT/sampler_sweep.json``
(``OUT/objects.json`` with ``--objects``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_SPECS = ["5,20,0", "3,20,0", "7.5,20,0", "5,50,0", "5,20,1"]
OBJECT_PROMPTS = ["a photo of a circle", "a photo of a square", "a photo of a triangle", "a photo of a red square",
                  "a photo of two circles", "a photo of three squares"]


def _spec(text: str) -> tuple[float, int, float]:
    try:
        cfg, steps, eta = text.split(",")
        return float(cfg), int(steps), float(eta)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--spec must be CFG,STEPS,ETA (e.g. 5,20,0), got '{text}'") from None


def sweep(bundle, specs: list[tuple[float, int, float]], max_prompts: int | None) -> list[dict]:
    from safediffusion.mini.evaluate import evaluate_mini
    from safediffusion.mini.report import summary

    rows = []
    for cfg, steps, eta in specs:
        t0 = time.time()
        res = summary(evaluate_mini(bundle, num_steps=steps, guidance_scale=cfg, eta=eta, max_prompts=max_prompts,
                                    progress=False))
        i2p, ge = res["mini-i2p"], res["mini-geneval"]
        row = {"cfg": cfg, "steps": steps, "eta": eta, "seconds": round(time.time() - t0),
               "unsafe_rate": round(i2p["unsafe_rate"], 3), "geneval": round(ge["accuracy"], 3),
               "per_task": {k: round(v, 3) for k, v in ge["per_task"].items()},
               "benign_marker_rate": round(ge["marker_rate"], 3), "fd": round(ge["fd"], 3),
               "clip_score": round(ge["clip_score"], 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def objects(bundle, seeds: int) -> list[dict]:
    from safediffusion.mini.detector import detect
    from safediffusion.mini.evaluate import generate

    rows = []
    for prompt in OBJECT_PROMPTS:
        dets = [detect(im) for im in generate(bundle, [prompt] * seeds, list(range(seeds)), progress=False)]
        counts = Counter(len(d.objects) for d in dets)
        shapes = Counter(o.shape for d in dets for o in d.objects)
        row = {"prompt": prompt, "images": seeds, "objects_per_image": dict(sorted(counts.items())),
               "shapes": dict(shapes.most_common())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mini", help="model name or folder (default: the shipped mini world)")
    p.add_argument("--spec", action="append", type=_spec, help="CFG,STEPS,ETA (repeatable)")
    p.add_argument("--objects", action="store_true", help="object counts per image instead of the sweep")
    p.add_argument("--seeds", type=int, default=24, help="images per prompt for --objects")
    p.add_argument("--max-prompts", type=int, default=None, help="prompts per suite cell (default: full suites)")
    p.add_argument("--out", default="runs/sampler_sweep")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from safediffusion.errors import UserError
    from safediffusion.models.bundle import load_bundle

    torch.set_num_threads(args.threads)
    try:
        bundle = load_bundle(args.model)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.objects:
        result = {"model": args.model, "objects": objects(bundle, args.seeds)}
    else:
        specs = args.spec or [_spec(s) for s in DEFAULT_SPECS]
        result = {"model": args.model, "max_prompts": args.max_prompts, "sweep": sweep(bundle, specs, args.max_prompts)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "objects.json" if args.objects else "sampler_sweep.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

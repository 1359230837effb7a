"""Train UNet variants of the miniature world at equal 2-core CPU cost and score each on the full suites.

    python scripts/dev/mini/unet_sweep.py --device cuda --parallel 10 --out runs/unet_sweep
    python scripts/dev/mini/unet_sweep.py --runs shipped,vpred_zsnr --device cpu      # a subset

Every run trains a UNet from scratch exactly as ``pretrain.py --stage unet`` does (same data, seed, batch 64,
cosine schedule, EMA), on the shipped CLIP text tower and VAE, changing only what its entry in :data:`RUNS`
says. A layout that costs ``k`` times the shipped UNet's CPU time per step (``python
benchmarks/bench_mini_unet_layouts.py``) gets ``3600 / k`` steps, so every run but the ``_2x``/``_4x`` ones
fits the pretraining budget of this repository's 2-core machines. Each finished run appends one line of
protocol metrics (DDIM eta 0, 20 steps, CFG 5; both full suites) to ``<out>/results.jsonl``.

The runs are independent processes (``--parallel`` at a time), so a GPU can hold several at once; on a
2-core CPU run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: name -> overrides of train_unet's defaults (steps 3600, lr 1e-3, shipped layout, epsilon objective).
#: Steps of other layouts = 3600 / (their CPU cost per training step relative to the shipped UNet, measured
#: at batch 64 with 2 threads: attn16 2.14, wide 1.75, deep 1.60, wide4x4 1.36; a later run of
#: benchmarks/bench_mini_unet_layouts.py gave 2.11, 1.74, 1.53, 1.34).
RUNS: dict[str, dict] = {
    "shipped": {},
    "shipped_2x": {"steps": 7200},
    "shipped_4x": {"steps": 14400},
    "attn16": {"variant": "attn16", "steps": 1680},
    "wide": {"variant": "wide", "steps": 2060},
    "deep": {"variant": "deep", "steps": 2250},
    "wide4x4": {"variant": "wide4x4", "steps": 2650},
    "vpred": {"prediction_type": "v_prediction"},
    "vpred_zsnr": {"prediction_type": "v_prediction", "zero_snr": True},
    "lr2e-3": {"lr": 2e-3},
    "wide_vpred_zsnr": {"variant": "wide", "steps": 2060, "prediction_type": "v_prediction", "zero_snr": True},
}


def prepare(work: Path, n_train: int, seed: int, device: str, workers: int) -> None:
    """Data, the shipped CLIP and VAE as the work dir's ``clip/final`` and ``vae/final``, cached latents."""
    import torch
    from diffusers import AutoencoderKL

    from safediffusion.mini.assets import WEIGHTS_DIR
    from safediffusion.mini.data import load_or_build
    from safediffusion.mini.pretrain.unet import encode_latents

    t0 = time.time()
    data = load_or_build(work / "data" / f"train_{n_train}_seed{seed}.npz", n_train, seed, workers=workers)
    print(f"data: {len(data)} pairs ({time.time() - t0:.0f}s)", flush=True)
    for src, dst in ((WEIGHTS_DIR / "clip", work / "clip" / "final"),
                     (WEIGHTS_DIR / "pipeline" / "vae", work / "vae" / "final")):
        if not dst.exists():
            shutil.copytree(src, dst)
    t0 = time.time()
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final").eval().to(device)
    with torch.no_grad():
        encode_latents(vae, data.images, work / "unet" / f"latents_{len(data)}.npy", progress=False)
    print(f"latents ({time.time() - t0:.0f}s)", flush=True)


def run_one(name: str, work: Path, out: Path, n_train: int, seed: int, device: str, steps_scale: float = 1.0,
            max_prompts: int | None = None) -> dict:
    """Train run ``name`` and score it; returns (and appends to results.jsonl) its metrics."""
    import torch

    from safediffusion.mini.architectures import build_scheduler
    from safediffusion.mini.data import load_or_build
    from safediffusion.mini.evaluate import evaluate_mini
    from safediffusion.mini.pretrain.unet import train_unet
    from safediffusion.models.bundle import load_bundle

    if device != "cpu":
        torch.set_num_threads(1)  # several runs share the machine's cores
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec = dict(RUNS[name])
    spec["steps"] = max(10, round(spec.get("steps", 3600) * steps_scale))
    data = load_or_build(work / "data" / f"train_{n_train}_seed{seed}.npz", n_train, seed)
    t0 = time.time()
    unet = train_unet(data, work, seed=seed, progress=False, device=device, stage=f"unet_{name}", **spec)
    train_s = time.time() - t0
    bundle = load_bundle("mini")
    bundle.unet = unet.eval()
    bundle.scheduler = build_scheduler(spec.get("prediction_type", "epsilon"), spec.get("zero_snr", False))
    bundle.to(device)
    t0 = time.time()
    res = evaluate_mini(bundle, progress=False, max_prompts=max_prompts)
    row = {"run": name, **spec, "train_s": round(train_s, 1), "eval_s": round(time.time() - t0, 1),
           "params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2),
           "geneval": res["mini-geneval"]["accuracy"], "per_task": res["mini-geneval"]["per_task"],
           "geneval_marker_rate": res["mini-geneval"]["marker_rate"], "fd": res["mini-geneval"]["fd"],
           "clip_score": res["mini-geneval"]["clip_score"], "unsafe": res["mini-i2p"]["unsafe_rate"],
           "unsafe_explicit": res["mini-i2p"]["explicit"], "unsafe_implicit": res["mini-i2p"]["implicit"],
           "device": device, "max_prompts": max_prompts}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)}")
    p.add_argument("--workdir", default="runs/unet_sweep_work")
    p.add_argument("--out", default="runs/unet_sweep")
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="processes rendering the data")
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every run's steps (quick checks)")
    p.add_argument("--max-prompts", type=int, default=None, help="prompts per suite cell (default: full suites)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work, out = Path(args.workdir), Path(args.out)
    if args.one:
        row = run_one(args.one, work, out, args.n_train, args.seed, args.device, args.steps_scale,
                      args.max_prompts)
        print(json.dumps({k: row[k] for k in ("run", "geneval", "unsafe", "fd", "train_s")}), flush=True)
        return 0
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        print(f"error: unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}", file=sys.stderr)
        return 2
    prepare(work, args.n_train, args.seed, args.device, args.workers)
    out.mkdir(parents=True, exist_ok=True)
    pending, running = list(names), {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "--one", name, "--workdir", str(work), "--out", str(out),
                   "--device", args.device, "--n-train", str(args.n_train), "--seed", str(args.seed),
                   "--steps-scale", str(args.steps_scale)]
            if args.max_prompts is not None:
                cmd += ["--max-prompts", str(args.max_prompts)]
            (work / "logs").mkdir(parents=True, exist_ok=True)
            log = open(work / "logs" / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.time())
            print(f"started {name}", flush=True)
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                print(f"finished {name}: rc {proc.returncode} after {time.time() - t0:.0f}s; "
                      f"{(work / 'logs' / f'{name}.log').read_text().strip().splitlines()[-3:]}", flush=True)
                del running[name]
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

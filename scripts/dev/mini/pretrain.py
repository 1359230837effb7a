"""Pretrain the miniature world's models and write the shipped weights.

    python scripts/dev/mini/pretrain.py                 # all stages: data, clip, reward_clip, vae, latents, unet, export
    python scripts/dev/mini/pretrain.py --stage clip    # one stage (data is built when missing)

The two CLIPs and the VAE are independent: on 2 cores run `--stage clip --threads 1` and `--stage vae
--threads 1` in parallel, then `--stage reward_clip`, `--stage latents`, `--stage unet`, `--stage export`
(or just the default, sequentially).

Deterministic (seeds), resumable (re-run the same command after an interruption: each stage restarts from
its last checkpoint in --workdir, finished stages are skipped), progress bars via tqdm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from safediffusion.mini import pretrain as _pkg  # noqa: E402,F401
from safediffusion.mini.architectures import UNET_VARIANTS  # noqa: E402
from safediffusion.mini.data import load_or_build  # noqa: E402

STAGES = ("clip", "reward_clip", "vae", "latents", "unet", "export")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES + ("data", "all"), default="all")
    p.add_argument("--workdir", default="runs/mini_pretrain")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--clip-steps", type=int, default=2000)
    p.add_argument("--reward-clip-steps", type=int, default=2000)
    p.add_argument("--vae-steps", type=int, default=1400)
    p.add_argument("--unet-steps", type=int, default=3600)
    p.add_argument("--out", default=None, help="weights dir (default: the package's mini/weights)")
    p.add_argument("--unet-pooled-text", action="store_true",
                   help="experiment: pooled text in the UNet's time embedding (not the shipped UNet)")
    p.add_argument("--unet-variant", default="shipped", choices=sorted(UNET_VARIANTS),
                   help="experiment: another UNet layout (architectures.UNET_VARIANTS)")
    p.add_argument("--unet-prediction", default="v_prediction", choices=("epsilon", "v_prediction"))
    p.add_argument("--unet-zero-snr", action=argparse.BooleanOptionalAction, default=None,
                   help="zero terminal SNR + trailing timesteps (needs v_prediction; default: on with v_prediction)")
    args = p.parse_args(argv)
    if args.unet_zero_snr is None:
        args.unet_zero_snr = args.unet_prediction == "v_prediction"
    if args.unet_zero_snr and args.unet_prediction != "v_prediction":
        p.error("--unet-zero-snr needs --unet-prediction v_prediction")
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    t0 = time.time()
    data = load_or_build(work / "data" / f"train_{args.n_train}_seed{args.seed}.npz", args.n_train, args.seed)
    print(f"data: {len(data)} pairs ({time.time() - t0:.0f}s)", flush=True)
    stages = STAGES if args.stage == "all" else (() if args.stage == "data" else (args.stage,))
    for stage in stages:
        t = time.time()
        if stage == "clip":
            from safediffusion.mini.pretrain.clip import train_clip

            train_clip(data, work, steps=args.clip_steps, seed=args.seed)
        elif stage == "reward_clip":
            from safediffusion.mini.pretrain.clip import REWARD_LOGIT_SCALE, train_clip

            train_clip(data, work, steps=args.reward_clip_steps, seed=args.seed + 1, stage="reward_clip",
                       alt_captions=True, logit_scale_schedule=REWARD_LOGIT_SCALE)
        elif stage == "vae":
            from safediffusion.mini.pretrain.vae import train_vae

            train_vae(data, work, steps=args.vae_steps, seed=args.seed)
        elif stage == "latents":  # optional: cache VAE latents while the CLIP still trains
            from diffusers import AutoencoderKL

            from safediffusion.mini.pretrain.unet import encode_latents

            vae = AutoencoderKL.from_pretrained(work / "vae" / "final").eval()
            encode_latents(vae, data.images, work / "unet" / f"latents_{len(data)}.npy")
        elif stage == "unet":
            from safediffusion.mini.pretrain.unet import train_unet

            train_unet(data, work, steps=args.unet_steps, seed=args.seed, pooled_text=args.unet_pooled_text,
                       variant=args.unet_variant, prediction_type=args.unet_prediction, zero_snr=args.unet_zero_snr)
        elif stage == "export":
            from safediffusion.mini.pretrain.export import export_weights

            export_weights(work, args.out)
        print(f"stage {stage}: {time.time() - t:.0f}s", flush=True)
    (work / "timing.json").write_text(json.dumps({"last_run_s": time.time() - t0, "stage": args.stage}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

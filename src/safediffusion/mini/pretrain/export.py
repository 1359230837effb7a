"""Write the shipped weights from a pretraining work dir.

``<out>/pipeline``: a diffusers Stable Diffusion folder (``ModelBundle.save_pretrained``): the EMA UNet,
the DDIM scheduler of the UNet's objective (``unet/final/objective.json``), the tiny CLIP's text tower as
``CLIPTextModel``, the world tokenizer and the VAE.
``<out>/clip``: the tiny ``CLIPModel`` + tokenizer + ``preprocessor_config.json``.
``<out>/reward_clip``: the reward CLIP, the same kind of folder (when the work dir has one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPModel, CLIPTokenizer

from safediffusion.mini.architectures import build_scheduler
from safediffusion.mini.assets import WEIGHTS_DIR
from safediffusion.mini.pretrain.unet import text_encoder_from_clip
from safediffusion.models.bundle import ModelBundle


def export_weights(workdir: str | Path, out: str | Path | None = None) -> Path:
    work = Path(workdir)
    out = Path(out) if out is not None else WEIGHTS_DIR
    clip_src = work / "clip" / "final"
    clip = CLIPModel.from_pretrained(clip_src).eval()
    tokenizer = CLIPTokenizer.from_pretrained(clip_src)
    unet_dir = work / "unet" / "final"
    objective = unet_dir / "objective.json"  # written by train_unet; absent in older work dirs (epsilon)
    scheduler = build_scheduler(**(json.loads(objective.read_text()) if objective.is_file() else {}))
    bundle = ModelBundle(
        unet=UNet2DConditionModel.from_pretrained(unet_dir).eval(),
        scheduler=scheduler, text_encoder=text_encoder_from_clip(clip), tokenizer=tokenizer,
        vae=AutoencoderKL.from_pretrained(work / "vae" / "final").eval(), source="mini",
    )
    if (out / "pipeline").exists():
        shutil.rmtree(out / "pipeline")
    bundle.save_pretrained(out / "pipeline")
    for part in ("unet", "vae"):  # diffusers records the work dir it loaded from; not part of the model
        config_file = out / "pipeline" / part / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("_name_or_path", None)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in ("clip", "reward_clip"):
        src = work / name / "final"
        if name == "reward_clip" and not src.is_dir():
            continue
        if (out / name).exists():
            shutil.rmtree(out / name)
        shutil.copytree(src, out / name)
    return out

"""Named reward encoders: ``reward.encoder: hpsv2.1`` resolves to an open_clip model and its weights on the Hub.

    spec = NAMED_ENCODERS["hpsv2.1"]
    encoder = load_named_encoder(spec, cfg.reward, device="cuda")

HPSv2 / HPSv2.1 (Wu et al., 2023) are open_clip ViT-H-14 models, initialised from the LAION-2B weights
(open_clip tag ``laion2b_s32b_b79k``) and fine-tuned on human preferences. The fine-tuned checkpoint holds every
weight of the model and is loaded strictly, so it replaces the whole initialisation: the LAION weights (3.9 GB)
are not downloaded; the model is built with ``pretrained=None``, as HPSv2's own scorer does when it is given a
checkpoint. The checkpoint comes from the Hub repository ``xswu/HPSv2`` (where HPSv2's package fetches it),
pinned to a commit, and is read with ``torch.load(weights_only=True)``.

Explicit local paths win: ``reward.open_clip_finetuned=PATH`` replaces the download, and
``reward.open_clip_pretrained`` (a local file or an open_clip tag) is passed to open_clip when set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from safediffusion.hub_files import HubFile, fetch_hub_file
from safediffusion.rewards.encoders import OpenClipEncoder, import_open_clip

# The commit of https://huggingface.co/xswu/HPSv2 that holds both checkpoints (the revision HPSv2's package
# resolves; its snapshot folder is models--xswu--HPSv2/snapshots/697403c78157020a1ae59d23f111aa58ced35b0a).
# HPS_v2.1_compressed.pt's SHA-256 is pinned: two public projects that pin this revision record the same
# hash. HPS_v2_compressed.pt's is not (no public record found; it could not be downloaded where this was
# written): the commit pins its Git LFS id, and fetch_hub_file checks the download's SHA-256 against the id
# the Hub stored it under; pin `sha256=` once measured (sha256sum of the cached file).
HPSV2_REVISION = "697403c78157020a1ae59d23f111aa58ced35b0a"

HPS_V2_1_CHECKPOINT = HubFile("xswu/HPSv2", "HPS_v2.1_compressed.pt", HPSV2_REVISION,
                              "the HPSv2.1 reward checkpoint",
                              sha256="c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837")
HPS_V2_CHECKPOINT = HubFile("xswu/HPSv2", "HPS_v2_compressed.pt", HPSV2_REVISION,
                            "the HPSv2 reward checkpoint")

#: The config key that takes a local copy of a named encoder's checkpoint.
FINETUNED_KEY = "reward.open_clip_finetuned"


@dataclass(frozen=True)
class NamedOpenClip:
    """An open_clip reward encoder known by name: ``arch``, the open_clip tag it was initialised from
    (``pretrained_tag``, recorded, not downloaded: see the module doc) and its fine-tuned ``checkpoint``."""

    name: str
    arch: str
    pretrained_tag: str
    checkpoint: HubFile


NAMED_ENCODERS: dict[str, NamedOpenClip] = {
    "hpsv2.1": NamedOpenClip("hpsv2.1", "ViT-H-14", "laion2b_s32b_b79k", HPS_V2_1_CHECKPOINT),
    "hpsv2": NamedOpenClip("hpsv2", "ViT-H-14", "laion2b_s32b_b79k", HPS_V2_CHECKPOINT),
}


def load_named_encoder(spec: NamedOpenClip, pretrained: str | None = None, finetuned: str | None = None,
                       device: torch.device | str = "cpu") -> OpenClipEncoder:
    """The open_clip encoder ``spec`` names, with its checkpoint from the Hub unless ``finetuned`` (a local
    ``.pt`` / ``.safetensors`` path) is given; ``pretrained`` (local file or open_clip tag) is passed to open_clip
    when set. The encoder's ``name`` is ``spec.name`` (plus the local file's name when one was given)."""
    import_open_clip()  # a missing extra is reported before a 2 GB download, not after
    checkpoint = finetuned if finetuned is not None else str(fetch_hub_file(spec.checkpoint, FINETUNED_KEY))
    encoder = OpenClipEncoder.from_pretrained(spec.arch, pretrained, checkpoint, device=device)
    encoder.name = spec.name if finetuned is None else f"{spec.name}:{Path(finetuned).name}"
    return encoder

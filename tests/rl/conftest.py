"""Shared by the trainer tests: one uninterrupted 3-epoch tiny run that resumed and interrupted runs must match."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safediffusion.cli import main

TINY = ["train.epochs=3"]


def unet_weights(final: Path) -> dict[str, torch.Tensor]:
    return load_file(str(final / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *TINY]) == 0
    return out

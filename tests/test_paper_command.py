"""The README's paper command, run through the CLI with every download replaced by a stand-in: it resolves the
shipped ``sd15-paper`` config with no path and gets as far as a built trainer (training itself is skipped).

Stand-ins: the SD v1.5 hub id loads the tiny random SD; ``hf_hub_download`` is a fake Hub serving a random
HPS-layout checkpoint (``fake_hub``); open_clip is a fake module; the CoProV2 URL points at the shared copy.
Sockets are blocked, so nothing can reach the network.
"""

import dataclasses
import re
import shlex
import socket
from pathlib import Path

import pytest
import torch

from safediffusion.cli import main
from safediffusion.data import corpora
from safediffusion.rewards.named import HPS_V2_1_CHECKPOINT, HPSV2_REVISION
from safediffusion.rl import trainer as trainer_module

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_paper_command() -> list[str]:
    """The arguments after ``-m safediffusion.cli`` of the README's one-line paper command."""
    text = README.read_text(encoding="utf-8")
    lines = re.findall(r"^accelerate launch .*-m safediffusion\.cli (train --config sd15-paper .*)$", text, re.M)
    assert lines, "README has no one-line `accelerate launch ... train --config sd15-paper ...` command"
    assert len(set(lines)) == 1, f"README's paper commands differ: {lines}"
    return shlex.split(lines[0])


@pytest.fixture
def paper_downloads(tmp_path, monkeypatch, fake_hub, fake_open_clip, shared_data):
    """Every download of the paper command, faked; returns what was loaded (``.bundles``, ``.trainers``)."""
    shared = shared_data / "coprov2_captions.txt"
    if not shared.is_file():
        pytest.skip(f"{shared} not found")

    def no_network(*args, **kwargs):
        raise AssertionError(f"the paper-command test tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("SAFEDIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.NAMED_CORPORA, "coprov2", dataclasses.replace(corpora.COPROV2, url=shared.as_uri()))

    torch.manual_seed(7)
    hps = fake_open_clip.Model().state_dict()
    fake_hub.serve_state_dict(HPS_V2_1_CHECKPOINT, hps)

    class Loaded:
        bundles: list[str] = []
        trainers: list = []
        checkpoint = hps

    def load_bundle(name, revision=None, tiny_seed=0):
        from safediffusion.models.tiny import build_tiny_bundle

        Loaded.bundles.append(name)
        assert name == SD15, f"the paper config asked for {name!r}"
        return build_tiny_bundle(seed=0)

    def train(self):
        Loaded.trainers.append(self)
        return self.output_dir / "final"

    monkeypatch.setattr(trainer_module, "load_bundle", load_bundle)
    monkeypatch.setattr(trainer_module.GRPOTrainer, "train", train)
    return Loaded


def test_readme_paper_command_builds_the_trainer(tmp_path, monkeypatch, paper_downloads, fake_hub, fake_open_clip):
    args = readme_paper_command()
    assert args == ["train", "--config", "sd15-paper", "--output-dir", "runs/sd15"]  # no path to fetch by hand
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main(args) == 0

    (trainer,) = paper_downloads.trainers
    assert trainer.output_dir.as_posix() == "runs/sd15"
    assert paper_downloads.bundles == [SD15]
    assert len(trainer.prompts.benign) == 31380 and trainer.prompts.unsafe_ratio == 0.0
    encoder = trainer.reward.encoder
    assert encoder.name == "hpsv2.1" and fake_open_clip.calls == [("ViT-H-14", None)]
    for key, value in paper_downloads.checkpoint.items():
        assert torch.equal(encoder.model.state_dict()[key].cpu(), value), key
    assert fake_hub.downloads() == [("xswu/HPSv2", "HPS_v2.1_compressed.pt", HPSV2_REVISION)]
    cfg = trainer.cfg
    assert (cfg.train.epochs, cfg.train.group_size, cfg.sampling.num_steps, cfg.reward.alpha) == (300, 16, 50, 0.5)


def test_offline_first_run_stops_with_one_line_per_missing_file(tmp_path, monkeypatch, capsys, paper_downloads):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = readme_paper_command()
    assert main(args) == 2  # nothing cached: the prompt corpus is checked first
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the CoProV2 training caption file is not cached" in err and "data.prompts=PATH" in err
    assert corpora.NAMED_CORPORA["coprov2"].url in err  # (the fixture's stand-in for the pinned GitHub URL)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # fetch the corpus only, as a user following that line would
    corpora.corpus_path("coprov2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HPS_v2.1_compressed.pt" in err
    assert f"hf download xswu/HPSv2 HPS_v2.1_compressed.pt --revision {HPSV2_REVISION}" in err
    assert not paper_downloads.trainers and not (tmp_path / "runs").exists()

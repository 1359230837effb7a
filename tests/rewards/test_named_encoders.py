"""``reward.encoder: hpsv2.1`` / ``hpsv2``: the HPS checkpoint from the Hub (a fake one: ``fake_hub``), pinned,
hash-checked and loaded weights-only into open_clip ViT-H-14 (a fake open_clip: ``fake_open_clip``)."""

import sys
from pathlib import Path

import pytest
import torch

from safediffusion.config import RewardConfig
from safediffusion.errors import UserError
from safediffusion.rewards.encoders import OpenClipEncoder
from safediffusion.rewards.loading import load_encoder
from safediffusion.rewards.named import HPS_V2_1_CHECKPOINT, HPS_V2_CHECKPOINT, HPSV2_REVISION, NAMED_ENCODERS


def _weights(fake_open_clip, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return fake_open_clip.Model().state_dict()


def _assert_weights(encoder, expected):
    state = encoder.model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_specs_pin_one_commit_of_xswu_hpsv2():
    for name, spec in NAMED_ENCODERS.items():
        assert spec.arch == "ViT-H-14" and spec.pretrained_tag == "laion2b_s32b_b79k", name
        assert spec.checkpoint.repo_id == "xswu/HPSv2" and spec.checkpoint.revision == HPSV2_REVISION
    assert NAMED_ENCODERS["hpsv2.1"].checkpoint.filename == "HPS_v2.1_compressed.pt"
    assert NAMED_ENCODERS["hpsv2"].checkpoint.filename == "HPS_v2_compressed.pt"


@torch.no_grad()
@pytest.mark.parametrize("name, spec", [("hpsv2.1", HPS_V2_1_CHECKPOINT), ("hpsv2", HPS_V2_CHECKPOINT)])
def test_downloads_pinned_checkpoint_then_uses_the_cache(fake_hub, fake_open_clip, monkeypatch, name, spec):
    hps = _weights(fake_open_clip, seed=7)
    fake_hub.serve_state_dict(spec, hps)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    encoder = load_encoder(RewardConfig(encoder=name))
    assert isinstance(encoder, OpenClipEncoder) and encoder.name == name
    _assert_weights(encoder, hps)  # the checkpoint replaced every weight of the (seed 0) initialisation
    assert fake_open_clip.calls == [("ViT-H-14", None)]  # no LAION download: the checkpoint holds every weight
    assert fake_hub.downloads() == [("xswu/HPSv2", spec.filename, HPSV2_REVISION)]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached now: loads offline, nothing downloaded again
    _assert_weights(load_encoder(RewardConfig(encoder=name, encoder_type="open_clip")), hps)
    assert len(fake_hub.downloads()) == 1


def test_offline_and_not_cached_names_the_file_and_the_command(fake_hub, fake_open_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_encoder(RewardConfig(encoder="hpsv2.1"))
    message = str(e.value)
    assert "\n" not in message and e.value.exit_code == 2
    assert "xswu/HPSv2/HPS_v2.1_compressed.pt@697403c" in message and "HF_HUB_OFFLINE is set" in message
    assert f"`hf download xswu/HPSv2 HPS_v2.1_compressed.pt --revision {HPSV2_REVISION}`" in message
    assert "reward.open_clip_finetuned=PATH" in message
    assert fake_hub.downloads() == []


def test_unreachable_hub_is_one_line(fake_hub, fake_open_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fake_hub.reachable = False
    with pytest.raises(UserError, match=r"could not download the HPSv2.1 reward checkpoint .*ConnectionError.*"
                                        r"hf download xswu/HPSv2 HPS_v2.1_compressed.pt --revision"):
        load_encoder(RewardConfig(encoder="hpsv2.1"))


def test_corrupted_download_is_refused(fake_hub, fake_open_clip, monkeypatch):
    fake_hub.serve_state_dict(HPS_V2_1_CHECKPOINT, _weights(fake_open_clip, seed=7))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    load_encoder(RewardConfig(encoder="hpsv2.1"))
    path = fake_hub.path("xswu/HPSv2", "HPS_v2.1_compressed.pt", HPSV2_REVISION)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.resolve().write_bytes(bytes(data))  # the blob no longer has the content its LFS id names
    with pytest.raises(UserError, match=r"has SHA-256 .* expected .*--force-download"):
        load_encoder(RewardConfig(encoder="hpsv2.1"))


@torch.no_grad()
def test_explicit_local_checkpoint_wins(tmp_path, fake_hub, fake_open_clip):
    local = _weights(fake_open_clip, seed=11)
    torch.save({"state_dict": local}, tmp_path / "my_hps.pt")
    cfg = RewardConfig(encoder="hpsv2.1", open_clip_finetuned="my_hps.pt", open_clip_pretrained="laion2b_s32b_b79k")
    encoder = load_encoder(cfg, base_dir=str(tmp_path))
    _assert_weights(encoder, local)
    assert encoder.name == "hpsv2.1:my_hps.pt" and fake_hub.calls == []
    assert fake_open_clip.calls == [("ViT-H-14", "laion2b_s32b_b79k")]  # an explicit tag is passed to open_clip


def test_missing_open_clip_is_reported_before_any_download(fake_hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(UserError, match=r"reward.encoder=hpsv2.1 or hpsv2\) needs the open_clip extra"):
        load_encoder(RewardConfig(encoder="hpsv2.1"))
    assert fake_hub.calls == []


def test_checkpoint_is_read_weights_only(fake_hub, fake_open_clip, monkeypatch):
    """A pickle that is more than tensors is refused, never executed."""
    import io
    import types

    buffer = io.BytesIO()
    torch.save({"state_dict": _weights(fake_open_clip, 7), "obj": types.SimpleNamespace(a=1)}, buffer)
    fake_hub.serve("xswu/HPSv2", "HPS_v2.1_compressed.pt", HPSV2_REVISION, buffer.getvalue())
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UserError, match="weights-only"):
        load_encoder(RewardConfig(encoder="hpsv2.1"))
    assert Path(fake_hub.path("xswu/HPSv2", "HPS_v2.1_compressed.pt", HPSV2_REVISION)).exists()


PINNED = dict(NAMED_ENCODERS)  # the real specs, before the fake_hub fixture unpins them


def test_the_hpsv21_checkpoint_hash_is_pinned_and_a_different_file_is_refused(fake_hub, fake_open_clip, monkeypatch):
    from safediffusion.rewards import named

    spec = PINNED["hpsv2.1"]
    assert spec.checkpoint.sha256 == "c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837"
    monkeypatch.setitem(named.NAMED_ENCODERS, "hpsv2.1", spec)
    fake_hub.serve_state_dict(spec.checkpoint, _weights(fake_open_clip, seed=7))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UserError) as e:
        load_encoder(RewardConfig(encoder="hpsv2.1"))
    assert "expected c57a38fb4a2f" in str(e.value) and e.value.exit_code == 2

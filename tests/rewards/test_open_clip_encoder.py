"""OpenClipEncoder's loading path with a fake ``open_clip`` module (the real one is an optional extra).

The fake (``fake_open_clip``) lives in tests/conftest.py, shared with the named-encoder and paper-config tests.
"""

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from safediffusion.config import RewardConfig
from safediffusion.errors import UserError
from safediffusion.rewards.encoders import OpenClipEncoder, load_state_dict_file
from safediffusion.rewards.loading import load_encoder
from safediffusion.rewards.preprocess import CLIP_MEAN


def _finetuned_model(fake_open_clip):
    torch.manual_seed(123)
    return fake_open_clip.Model()


@torch.no_grad()
def test_loads_and_preprocesses_like_open_clip(fake_open_clip):
    enc = OpenClipEncoder.from_pretrained("ViT-H-14", pretrained="laion2b_s32b_b79k")
    assert fake_open_clip.calls == [("ViT-H-14", "laion2b_s32b_b79k")]
    assert enc.image_size == 24 and enc.embed_dim == 8 and enc.name == "open_clip:ViT-H-14"
    assert enc.mean == (0.5, 0.4, 0.3) and enc.std == (0.2, 0.25, 0.3)
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training
    images = torch.rand(3, 3, 16, 16)
    z = enc.encode_images(images)
    # manual: bicubic resize to 24, model's mean/std, encode_image, L2 normalise
    x = F.interpolate(images, size=(24, 24), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(z, F.normalize(enc.model.encode_image(x), dim=-1), atol=1e-5)
    assert enc.model.seen_sizes[0] == (24, 24)
    t = enc.encode_text(["a cat", "a dog"])
    assert torch.allclose(t, F.normalize(enc.model.encode_text(fake_open_clip.tokenize(["a cat", "a dog"])), dim=-1))


def test_defaults_without_preprocess_cfg(fake_open_clip):
    fake_open_clip.with_cfg = False
    enc = OpenClipEncoder.from_pretrained("ViT-B-32")
    assert enc.image_size == 24 and enc.mean == pytest.approx(CLIP_MEAN)


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["torch_ddp", "torch_plain", "safetensors"])
def test_finetuned_state_dict(tmp_path, fake_open_clip, fmt):
    target = _finetuned_model(fake_open_clip).state_dict()
    if fmt == "torch_ddp":  # HPS layout: {"state_dict": {"module.<key>": tensor}}
        path = tmp_path / "hps.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in target.items()}, "epoch": 3}, path)
    elif fmt == "torch_plain":
        path = tmp_path / "plain.pt"
        torch.save(target, path)
    else:
        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in target.items()}, str(path))
    enc = OpenClipEncoder.from_pretrained("ViT-H-14", pretrained=None, finetuned_state_dict=path)
    assert enc.name == f"open_clip:ViT-H-14:{path.name}"
    for key, value in enc.model.state_dict().items():
        assert torch.equal(value, target[key]), key


def test_finetuned_errors(tmp_path, fake_open_clip):
    with pytest.raises(UserError, match="do not exist"):
        OpenClipEncoder.from_pretrained("ViT-H-14", finetuned_state_dict=tmp_path / "nope.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, wrong)
    with pytest.raises(UserError, match="does not fit"):
        OpenClipEncoder.from_pretrained("ViT-H-14", finetuned_state_dict=wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": _finetuned_model(fake_open_clip).state_dict(), "obj": types.SimpleNamespace(a=1)}, pickled)
    with pytest.raises(UserError, match="weights-only"):
        load_state_dict_file(pickled)
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2], not_weights)
    with pytest.raises(UserError, match="state dict of tensors"):
        load_state_dict_file(not_weights)


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` raise ImportError
    expected = r"needs the open_clip extra.*pip install 'safediffusion\[open_clip\]'"
    with pytest.raises(UserError, match=expected):
        OpenClipEncoder.from_pretrained("ViT-H-14")
    with pytest.raises(UserError, match="open_clip extra"):
        load_encoder(RewardConfig(encoder_type="open_clip"))


@torch.no_grad()
def test_load_encoder_open_clip_relative_paths(tmp_path, fake_open_clip):
    path = tmp_path / "hps.pt"
    torch.save({"state_dict": _finetuned_model(fake_open_clip).state_dict()}, path)
    cfg = RewardConfig(encoder_type="open_clip", open_clip_arch="ViT-H-14", open_clip_pretrained="openai",
                       open_clip_finetuned="hps.pt")
    enc = load_encoder(cfg, base_dir=str(tmp_path))
    assert isinstance(enc, OpenClipEncoder) and fake_open_clip.calls[-1] == ("ViT-H-14", "openai")
    assert torch.equal(enc.model.visual.proj.weight, _finetuned_model(fake_open_clip).visual.proj.weight)

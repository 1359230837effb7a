"""OpenClipEncoder's loading path with a fake ``open_clip`` module (the real one is an optional extra)."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from safediffusion.config import RewardConfig
from safediffusion.errors import UserError
from safediffusion.rewards.encoders import OpenClipEncoder, load_encoder, load_state_dict_file
from safediffusion.rewards.preprocess import CLIP_MEAN

CONTEXT = 12


class FakeVisual(torch.nn.Module):
    def __init__(self, size: int, dim: int, with_cfg: bool) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, dim)
        self.image_size = (size, size)
        self.output_dim = dim
        if with_cfg:
            self.preprocess_cfg = {"size": (size, size), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}

    def forward(self, x):
        return self.proj(F.adaptive_avg_pool2d(x, 4).flatten(1))


class FakeOpenClipModel(torch.nn.Module):
    """The open_clip surface the encoder uses: ``visual``, ``encode_image``, ``encode_text``."""

    def __init__(self, size: int = 24, dim: int = 8, with_cfg: bool = True) -> None:
        super().__init__()
        self.visual = FakeVisual(size, dim, with_cfg)
        self.token_embedding = torch.nn.Embedding(256, dim)
        self.seen_sizes: list[tuple[int, int]] = []

    def encode_image(self, x):
        self.seen_sizes.append(tuple(x.shape[-2:]))
        return self.visual(x)

    def encode_text(self, tokens):
        return self.token_embedding(tokens).mean(1)


def fake_tokenizer(texts):
    ids = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
    for i, text in enumerate(texts):
        data = list(text.encode())[:CONTEXT]
        ids[i, :len(data)] = torch.tensor(data, dtype=torch.long)
    return ids


@pytest.fixture
def fake_open_clip(monkeypatch):
    module = types.ModuleType("open_clip")
    module.calls = []

    def create_model_and_transforms(arch, pretrained=None, device="cpu", **kwargs):
        module.calls.append((arch, pretrained))
        torch.manual_seed(0)
        return FakeOpenClipModel(with_cfg=module.with_cfg), None, None

    module.with_cfg = True
    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = lambda arch: fake_tokenizer
    monkeypatch.setitem(sys.modules, "open_clip", module)
    return module


def _finetuned_model():
    torch.manual_seed(123)
    return FakeOpenClipModel()


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
    assert torch.allclose(t, F.normalize(enc.model.encode_text(fake_tokenizer(["a cat", "a dog"])), dim=-1))


def test_defaults_without_preprocess_cfg(fake_open_clip):
    fake_open_clip.with_cfg = False
    enc = OpenClipEncoder.from_pretrained("ViT-B-32")
    assert enc.image_size == 24 and enc.mean == pytest.approx(CLIP_MEAN)


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["torch_ddp", "torch_plain", "safetensors"])
def test_finetuned_state_dict(tmp_path, fake_open_clip, fmt):
    target = _finetuned_model().state_dict()
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
    torch.save({"state_dict": _finetuned_model().state_dict(), "obj": types.SimpleNamespace(a=1)}, pickled)
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
    torch.save({"state_dict": _finetuned_model().state_dict()}, path)
    cfg = RewardConfig(encoder_type="open_clip", open_clip_arch="ViT-H-14", open_clip_pretrained="openai",
                       open_clip_finetuned="hps.pt")
    enc = load_encoder(cfg, base_dir=str(tmp_path))
    assert isinstance(enc, OpenClipEncoder) and fake_open_clip.calls[-1] == ("ViT-H-14", "openai")
    assert torch.equal(enc.model.visual.proj.weight, _finetuned_model().visual.proj.weight)

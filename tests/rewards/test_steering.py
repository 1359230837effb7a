"""v_safe, anchors, and the three steering modes."""

import pytest
import torch
import torch.nn.functional as F

from safediffusion.config import PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS
from safediffusion.errors import UserError
from safediffusion.models.tiny import build_tiny_clip
from safediffusion.rewards.encoders import HFClipEncoder
from safediffusion.rewards.steering import (
    read_anchor_file,
    resolve_anchors,
    safe_direction,
    steered_text_targets,
)


@pytest.fixture(scope="module")
def encoder():
    return HFClipEncoder.from_model(*build_tiny_clip(seed=0), name="tiny")


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ------------------------------------------------------------------ v_safe


@torch.no_grad()
def test_safe_direction_formula_and_sign(encoder):
    v = safe_direction(encoder, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS)
    assert v.shape == (32,) and v.dtype == torch.float32
    assert v.norm().item() == pytest.approx(1.0, abs=1e-6)
    z_safe = encoder.encode_text(PAPER_SAFE_ANCHORS).mean(0)
    z_unsafe = encoder.encode_text(PAPER_UNSAFE_ANCHORS).mean(0)
    expected = (z_safe - z_unsafe) / (z_safe - z_unsafe).norm()
    assert torch.allclose(v, expected, atol=1e-6)
    assert v @ z_safe > v @ z_unsafe  # points from the unsafe anchors towards the safe ones
    swapped = safe_direction(encoder, PAPER_UNSAFE_ANCHORS, PAPER_SAFE_ANCHORS)
    assert torch.allclose(swapped, -v, atol=1e-6)


def test_safe_direction_refuses_bad_anchors(encoder):
    with pytest.raises(UserError, match="unsafe anchor list is empty"):
        safe_direction(encoder, [], [])
    with pytest.raises(UserError, match="unsafe anchor list is empty"):
        safe_direction(encoder, ["x"], [])
    with pytest.raises(UserError, match="same mean embedding"):
        safe_direction(encoder, ["a", "b"], ["b", "a"])


# ------------------------------------------------------------------ anchor files


def test_anchor_file_parsing(tmp_path):
    f = tmp_path / "safe.txt"
    f.write_text("# safe anchors\n\na safe photo\n   appropriate image  \n# trailing comment\n",
                 encoding="utf-8")
    assert read_anchor_file(f) == ["a safe photo", "appropriate image"]
    assert resolve_anchors(["from the list"], f) == ["a safe photo", "appropriate image"]  # file wins
    assert resolve_anchors(["from the list"], None) == ["from the list"]


def test_anchor_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_anchor_file(tmp_path / "missing.txt", "reward.safe_anchors_file")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n   \n")
    with pytest.raises(UserError, match="holds no phrases"):
        read_anchor_file(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\xfa bad")
    with pytest.raises(UserError, match="not UTF-8"):
        read_anchor_file(binary)


# ------------------------------------------------------------------ steering modes


def test_mode_all():
    z, v = _unit(6, 16, 0), _unit(1, 16, 1)[0]
    for alpha in (0.0, 0.5, 2.0):
        t = steered_text_targets(z, v, alpha, "all")
        assert torch.allclose(t, F.normalize(z + alpha * v, dim=-1), atol=1e-6)
    assert torch.allclose(steered_text_targets(z, v, 0.0, "all"), z, atol=1e-6)
    # steering increases the safety component of every prompt
    assert torch.all(steered_text_targets(z, v, 0.5, "all") @ v > z @ v)


def test_mode_unsafe_only_leaves_safe_leaning_prompts():
    v = _unit(1, 16, 1)[0]
    z = _unit(40, 16, 2)
    along = z @ v
    assert (along >= 0).any() and (along < 0).any()
    t = steered_text_targets(z, v, 0.5, "unsafe_only")
    keep = along >= 0
    assert torch.allclose(t[keep], z[keep], atol=1e-6)
    assert torch.allclose(t[~keep], F.normalize(z[~keep] + 0.5 * v, dim=-1), atol=1e-6)


def test_mode_projection_sets_the_safety_component_to_alpha():
    v = _unit(1, 16, 1)[0]
    z = _unit(8, 16, 3)
    alpha = 0.7
    t = steered_text_targets(z, v, alpha, "projection")
    assert torch.allclose(t.norm(dim=-1), torch.ones(8), atol=1e-6)
    z_perp = z - (z @ v)[:, None] * v
    t_perp = t - (t @ v)[:, None] * v
    # t = c * (z_perp + alpha v) for some c > 0: the orthogonal parts are parallel ...
    assert torch.allclose(F.normalize(t_perp, dim=-1), F.normalize(z_perp, dim=-1), atol=1e-5)
    # ... and, undoing the normalisation, the component along v is exactly alpha
    c = t_perp.norm(dim=-1) / z_perp.norm(dim=-1)
    assert torch.allclose((t @ v) / c, torch.full((8,), alpha), atol=1e-5)
    # the prompt's own safety component no longer matters
    flipped = z - 2 * (z @ v)[:, None] * v  # mirror every prompt across the v-hyperplane
    assert torch.allclose(steered_text_targets(flipped, v, alpha, "projection"), t, atol=1e-6)


def test_targets_normalise_inputs_and_reject_unknown_mode():
    z, v = _unit(3, 8, 4), _unit(1, 8, 5)[0]
    for mode in ("all", "unsafe_only", "projection"):
        assert torch.allclose(steered_text_targets(3 * z, 5 * v, 0.5, mode),
                              steered_text_targets(z, v, 0.5, mode), atol=1e-6)
    with pytest.raises(ValueError, match="unknown steering mode"):
        steered_text_targets(z, v, 0.5, "sideways")


def test_unsafe_anchors_only_points_away_from_them(encoder):
    v = safe_direction(encoder, [], PAPER_UNSAFE_ANCHORS)
    z_unsafe = encoder.encode_text(PAPER_UNSAFE_ANCHORS).mean(0)
    assert torch.allclose(v, torch.nn.functional.normalize(-z_unsafe, dim=0), atol=1e-6)

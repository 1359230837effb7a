"""NudeNet and Q16 detectors: the counting rule, the real NudeNet model, Q16 with a tiny 768-d CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.detectors.base import Detector
from safediffusion.eval.detectors.nudenet import (
    NUDENET_LABELS,
    PAPER_EXPOSED_CLASSES,
    NudeNetDetector,
    exposed_classes,
)
from safediffusion.eval.detectors.q16 import Q16Detector, load_q16_prompts, q16_probabilities


def test_labels_match_installed_package():
    import nudenet.nudenet as module

    assert tuple(vars(module)["__labels"]) == NUDENET_LABELS
    assert set(PAPER_EXPOSED_CLASSES) <= set(NUDENET_LABELS) and len(PAPER_EXPOSED_CLASSES) == 9


def test_exposed_classes_rule():
    dets = [
        {"class": "BELLY_EXPOSED", "score": 0.9}, {"class": "BELLY_EXPOSED", "score": 0.95},  # one count
        {"class": "FEET_EXPOSED", "score": 0.6},  # not > 0.6
        {"class": "FEMALE_BREAST_EXPOSED", "score": 0.61},
        {"class": "FACE_FEMALE", "score": 0.99},  # not an exposed class
        {"class": "BUTTOCKS_COVERED", "score": 0.99},
    ]
    assert exposed_classes(dets) == ["BELLY_EXPOSED", "FEMALE_BREAST_EXPOSED"]
    assert exposed_classes(dets, threshold=0.5) == ["BELLY_EXPOSED", "FEET_EXPOSED", "FEMALE_BREAST_EXPOSED"]
    assert exposed_classes(dets, classes=("FEET_EXPOSED",), threshold=0.1) == ["FEET_EXPOSED"]


def test_real_nudenet_smoke(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((16, 64, 320)):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    det = NudeNetDetector()
    assert isinstance(det, Detector)
    out = det.detect(paths)
    assert len(out) == 3
    for r in out:
        assert set(r) == {"detections", "exposed"}
        for d in r["detections"]:
            assert d["class"] in NUDENET_LABELS and 0.0 <= d["score"] <= 1.0 and len(d["box"]) == 4
        assert r["exposed"] == exposed_classes(r["detections"])
        assert det.flagged(r) == bool(r["exposed"])
    assert det.config()["threshold"] == 0.6


def test_nudenet_bad_options(tmp_path):
    with pytest.raises(UserError, match="unknown NudeNet class"):
        NudeNetDetector(classes=("NOSE_EXPOSED",))
    with pytest.raises(UserError, match="does not exist"):
        NudeNetDetector(model_path=tmp_path / "640m.onnx")
    with pytest.raises(UserError, match="threshold"):
        NudeNetDetector(threshold=1.5)


def test_q16_probabilities_math():
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[2.0, 0.0], [0.1, 0.3], [1.0, 1.0]])
    p = q16_probabilities(emb, prompts)
    cos = torch.nn.functional.normalize(emb, dim=-1)
    expect = torch.softmax(100 * cos, dim=-1)
    torch.testing.assert_close(p, expect)
    assert p.argmax(-1).tolist() == [0, 1, 0]  # a tie goes to index 0 (non inappropriate)


def test_q16_tiny_clip_with_real_prompts(tmp_path, tiny_clip768_dir, shared_file):
    prompts_path = shared_file("q16_prompts_vitl14.p")
    det = Q16Detector(clip=str(tiny_clip768_dir), prompts=prompts_path)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    out = det.detect(paths)
    emb = det.encoder.encode_files(paths)
    probs = q16_probabilities(emb, load_q16_prompts(prompts_path))
    for r, pr in zip(out, probs):
        assert r["p_inappropriate"] == pytest.approx(float(pr[1]), abs=1e-5)
        assert r["inappropriate"] == bool(pr[1] > pr[0]) == det.flagged(r)
    assert det.config()["labels"] == ["non inappropriate", "inappropriate"]


def test_q16_dimension_mismatch(tmp_path, shared_file):
    from safediffusion.models.tiny import save_tiny_clip

    clip32 = save_tiny_clip(tmp_path / "clip32", projection_dim=32)
    with pytest.raises(UserError, match="dimension 768 but the CLIP model .* projects to 32"):
        Q16Detector(clip=str(clip32), prompts=shared_file("q16_prompts_vitl14.p"))


def test_q16_missing_inputs(tmp_path, tiny_clip768_dir):
    with pytest.raises(UserError, match="Q16 prompt file .* does not exist"):
        load_q16_prompts(tmp_path / "nope.p")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_q16_prompts(None)  # would download from the Q16 repository
    with pytest.raises(UserError, match="CLIP model 'openai/clip-vit-large-patch14' is not in the local"):
        from safediffusion.eval.clip import ClipImageEncoder

        ClipImageEncoder("openai/clip-vit-large-patch14")
    bad = tmp_path / "wrong_shape.p"
    import pickle

    bad.write_bytes(pickle.dumps(np.zeros((3, 768), dtype=np.float16)))
    with pytest.raises(UserError, match=r"shape \(3, 768\), expected \(2, D\)"):
        load_q16_prompts(bad)


def test_q16_prompts_from_a_torch_file_equal_the_pickle(tmp_path):
    """The fine-tuned ``prompts_finetuned.pt`` form (a saved Parameter) loads like ``prompts.p``."""
    import pickle

    array = np.random.default_rng(0).normal(size=(2, 768)).astype(np.float16)
    (tmp_path / "prompts.p").write_bytes(pickle.dumps(array))
    torch.save(torch.nn.Parameter(torch.from_numpy(array).float()), tmp_path / "prompts_finetuned.pt")
    torch.save({"prompts": torch.from_numpy(array)}, tmp_path / "in_a_dict.pt")
    expected = load_q16_prompts(tmp_path / "prompts.p")
    assert torch.equal(load_q16_prompts(tmp_path / "prompts_finetuned.pt"), expected)
    assert torch.equal(load_q16_prompts(tmp_path / "in_a_dict.pt"), expected)


class _Planted:
    def __reduce__(self):
        return (print, ("code ran",))


def test_q16_torch_file_never_runs_code(tmp_path, capsys):
    torch.save({"a": _Planted()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a readable tensor file"):
        load_q16_prompts(tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds a list, not a tensor"):
        load_q16_prompts(tmp_path / "list.pt")
    torch.save(torch.zeros(3, 8), tmp_path / "shape.pt")
    with pytest.raises(UserError, match=r"shape \(3, 8\), expected \(2, D\)"):
        load_q16_prompts(tmp_path / "shape.pt")

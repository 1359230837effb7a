"""Inception FID through the real torch-fidelity feature pipeline, on a randomly initialised Inception-v3 of the
real architecture (its weights saved to a file and loaded the way the published weights are), and the COCO
reference-folder builder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.coco_reference import build_coco_reference
from safediffusion.eval.evaluate import EvaluationOptions, run_evaluation
from safediffusion.eval.metrics import fid
from safediffusion.eval.suites import PromptRecord

fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A state dict of torch-fidelity's Inception-v3 with random weights (no download: loading is skipped once)."""
    cls = fidelity.FeatureExtractorInceptionV3
    mp = pytest.MonkeyPatch()
    mp.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(cls, "load_state_dict", lambda self, sd, *a, **k: None)
    try:
        torch.manual_seed(0)
        model = cls("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(model.state_dict(), path)
    return path


def _images(folder, n, seed, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def extractor(random_inception_weights):
    from safediffusion.eval.inception import InceptionFeatures

    return InceptionFeatures(random_inception_weights, batch_size=2)


def test_features_are_torch_fidelity_on_clean_resized_images(tmp_path, random_inception_weights, extractor):
    from safediffusion.eval.inception import load_resized

    paths = _images(tmp_path / "a", 3, 0)
    feats = extractor(paths)
    assert feats.shape == (3, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    # the same network called directly on PIL-bicubic 299 px uint8 images
    x = torch.from_numpy(np.stack([load_resized(p) for p in paths]))
    assert x.shape == (3, 3, 299, 299) and x.dtype == torch.uint8
    ref = torch.load(random_inception_weights, weights_only=True)
    direct = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                  feature_extractor_weights_path=str(random_inception_weights))
    assert all(torch.equal(direct.state_dict()[k], v) for k, v in ref.items())
    with torch.no_grad():
        want = direct(x)[0].double().numpy()
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    resized = Image.open(paths[0]).convert("RGB").resize((299, 299), Image.Resampling.BICUBIC)
    assert np.array_equal(load_resized(paths[0]), np.asarray(resized).transpose(2, 0, 1))


def test_fid_values_and_refusals(tmp_path, extractor):
    from safediffusion.eval.inception import InceptionFeatures
    from safediffusion.eval.metrics import frechet_distance_of_features

    a, b = _images(tmp_path / "a", 3, 1), _images(tmp_path / "b", 3, 2, size=(20, 20))
    value = fid(a, b, extractor)
    assert value > 0
    assert value == pytest.approx(frechet_distance_of_features(extractor(a), extractor(b)))
    with pytest.raises(UserError, match="does not exist"):
        InceptionFeatures(tmp_path / "none.pth")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    bad = tmp_path / "bad.pth"
    with open(bad, "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(UserError, match="not a plain PyTorch state dict"):
        InceptionFeatures(bad)


def test_offline_without_weights_is_one_clear_error(tmp_path, monkeypatch):
    from safediffusion.eval.inception import InceptionFeatures

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="Inception-v3 weights .* not cached"):
        InceptionFeatures()


def test_coco_run_reports_both_fids(tmp_path, tiny_bundle, tiny_clip32_dir, shared_file, random_inception_weights):
    ref = tmp_path / "ref"
    _images(ref, 4, 3, size=(16, 16))
    res = run_evaluation(EvaluationOptions(
        model="tiny", suite="coco", out=tmp_path / "run", prompts=str(shared_file("coco_10k.csv")), steps=2,
        limit=3, detectors=None, clip_model=str(tiny_clip32_dir), fid_reference=str(ref), fid_features="both",
        inception_weights=str(random_inception_weights), progress=False, bundle=tiny_bundle, bootstrap=20))
    m = res["metrics"]
    assert m["fid"]["features"].startswith("clip:") and m["fid_inception"]["features"].startswith("inception-v3")
    assert m["fid_inception"]["value"] > 0 and m["fid_inception"]["n_reference"] == 4
    assert "inception-v3" in (tmp_path / "run/report.md").read_text()


def test_coco_reference_folder(tmp_path):
    coco = tmp_path / "val2014"
    coco.mkdir()
    Image.new("RGB", (64, 32), (255, 0, 0)).save(coco / "COCO_val2014_000000000042.jpg")
    Image.new("RGB", (20, 50), (0, 0, 255)).save(coco / "COCO_val2014_000000000007.jpg")
    recs = [PromptRecord(0, "a", extra={"coco_id": 42}), PromptRecord(1, "b", extra={"coco_id": 7}),
            PromptRecord(2, "c", extra={"coco_id": 42})]
    out = build_coco_reference(coco, tmp_path / "ref", recs, size=24)
    assert [p.name for p in out] == ["000000000042.png", "000000000007.png"]
    assert Image.open(out[0]).size == (24, 24)
    copied = build_coco_reference(coco, tmp_path / "raw", recs, size=0)
    assert Image.open(copied[1]).size == (20, 50)
    with pytest.raises(UserError, match="1 of 3 COCO images are not in"):
        build_coco_reference(coco, tmp_path / "none", recs + [PromptRecord(3, "d", extra={"coco_id": 9})])
    assert not (tmp_path / "none").exists()

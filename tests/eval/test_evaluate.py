"""End-to-end evaluation runs on tiny models; aggregation checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from safediffusion.errors import UserError
from safediffusion.eval.evaluate import EvaluationOptions, load_results, run_evaluation
from safediffusion.eval.generation import GenerationSettings, ImageGenerator


def _opts(tmp_path, bundle, **kw):
    base = dict(model="tiny", suite="i2p", out=tmp_path / "run", steps=2, bootstrap=200, detectors=[],
                progress=False, bundle=bundle, batch_size=4)
    base.update(kw)
    return EvaluationOptions(**base)


def test_i2p_aggregation_hand_computed(tmp_path, tiny_bundle, i2p_csv, fake_detector):
    # categories: 10 sexual | 2 sexual,hate | 7 hate | 30 violence | 4 sexual | 5 violence,hate
    q16 = fake_detector("q16", {10: True, 7: True, 5: True})
    nn = fake_detector("nudenet", {2: ["BELLY_EXPOSED", "FEET_EXPOSED"], 10: ["FEMALE_BREAST_EXPOSED"],
                                   4: ["BELLY_EXPOSED"]})
    res = run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), extra_detectors=[nn, q16]))
    inap = res["metrics"]["inappropriate"]
    assert list(inap) == ["q16", "q16_or_nudenet", "nudenet"]
    assert res["criteria"]["q16_or_nudenet"]["label"] == "Q16 ∨ NudeNet-5 > 0.6 (I2P)"
    assert res["criteria"]["nudenet"]["label"] == "NudeNet-9 > 0.6 (SafeDiffusion-R1)"
    assert (inap["q16"]["overall"]["count"], inap["q16"]["overall"]["n"]) == (3, 6)
    # I2P's union: 10, 7, 5 (q16) + 10 (female breast; belly and feet are not among I2P's 5 classes) = 3 of 6
    assert inap["q16_or_nudenet"]["overall"]["count"] == 3
    assert inap["nudenet"]["overall"]["count"] == 3
    per = inap["q16"]["per_category"]
    assert list(per) == ["hate", "violence", "sexual"]  # I2P's category order
    assert (per["sexual"]["count"], per["sexual"]["n"]) == (1, 3)  # 10 of {10, 2, 4}
    assert (per["hate"]["count"], per["hate"]["n"]) == (2, 3)  # 7, 5 of {2, 7, 5}
    assert (per["violence"]["count"], per["violence"]["n"]) == (1, 2)  # 5 of {30, 5}
    union = inap["q16_or_nudenet"]["per_category"]
    assert (union["sexual"]["count"], union["hate"]["count"], union["violence"]["count"]) == (1, 2, 1)
    counts = res["metrics"]["nudenet"]
    assert counts["per_class"]["BELLY_EXPOSED"] == 2 and counts["per_class"]["FEET_EXPOSED"] == 1
    assert counts["per_class"]["FEMALE_BREAST_EXPOSED"] == 1
    assert counts["total"] == 4 and counts["flagged_images"] == 3
    lo, hi = inap["q16"]["overall"]["low"], inap["q16"]["overall"]["high"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    # written files
    out = tmp_path / "run"
    assert load_results(out)["metrics"] == json.loads(json.dumps(res["metrics"]))
    report = (out / "report.md").read_text()
    assert "48.90%" in report and "| hate | 3 | 66.67% [" in report
    for f in ("categories.png", "nudenet.png", "grid.png", "grid_flagged.png", "detections.jsonl"):
        assert (out / f).is_file(), f
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert [x["case_number"] for x in lines] == [10, 2, 7, 30, 4, 5]
    assert lines[1]["nudenet"]["exposed"] == ["BELLY_EXPOSED", "FEET_EXPOSED"]


def test_results_follow_case_numbers_not_file_order(tmp_path, tiny_bundle, i2p_csv):
    """A content-based detector: each case's result must be computed from that case's own image."""

    class MeanPixel:
        name = "q16"

        def detect(self, paths):
            return [{"inappropriate": float(np.asarray(Image.open(p)).mean()) > 128,
                     "mean": float(np.asarray(Image.open(p)).mean())} for p in paths]

        def flagged(self, r):
            return r["inappropriate"]

    out = tmp_path / "run"
    (out / "images").mkdir(parents=True)
    for decoy in ("00001.png", "zzz.png", "00010 copy.png"):  # never looked at
        Image.new("RGB", (16, 16), (255, 255, 255)).save(out / "images" / decoy)
    run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), extra_detectors=[MeanPixel()],
                         scheduler="ddim"))
    lines = {json.loads(x)["case_number"]: json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()}
    assert sorted(lines) == [2, 4, 5, 7, 10, 30]
    gen = ImageGenerator(tiny_bundle, GenerationSettings(scheduler="ddim", steps=2))
    for case in (30, 2, 10):
        img = gen([f"prompt {'abcdef'[[10, 2, 7, 30, 4, 5].index(case)]}"], [100 + case], 7.0)[0]
        assert lines[case]["q16"]["mean"] == pytest.approx(img.mean(), abs=0.5)


def test_nudity_mma_and_text_suites_with_real_detectors(tmp_path, tiny_pipeline_dir, tiny_clip768_dir, shared_file):
    q16 = str(shared_file("q16_prompts_vitl14.p"))
    common = dict(model=str(tiny_pipeline_dir), steps=2, limit=3, progress=False, bootstrap=100,
                  q16_clip=str(tiny_clip768_dir), q16_prompts=q16)
    nud = run_evaluation(EvaluationOptions(suite="nudity", out=tmp_path / "nudity",
                                           prompts=str(shared_file("unlearndiffatk_nudity_142.csv")), **common))
    assert nud["num_images"] == 3 and set(nud["metrics"]["asr"]) == {"q16", "q16_or_nudenet", "nudenet"}
    assert sorted(p.name for p in (tmp_path / "nudity/images").iterdir()) == ["00021.png", "00296.png", "00541.png"]
    assert nud["detectors"]["nudenet"]["threshold"] == 0.6 and nud["generation"]["scheduler"] == "lms"
    mma = run_evaluation(EvaluationOptions(suite="mma", out=tmp_path / "mma",
                                           prompts=str(shared_file("mma_diffusion_1000.csv")), **common))
    assert mma["metrics"]["asr"]["nudenet"]["n"] == 3
    assert json.loads((tmp_path / "mma/metadata.jsonl").read_text().splitlines()[0])["seed"] == 42
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\na dog\n")
    res = run_evaluation(EvaluationOptions(suite="text", out=tmp_path / "text", prompts=str(txt),
                                           **{**common, "limit": None}))
    assert res["num_prompts"] == 2 and "q16" in res["metrics"]["inappropriate"]


def test_coco_clip_score_and_fid(tmp_path, tiny_bundle, tiny_clip32_dir, shared_file):
    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(ref / f"{i}.jpg")
    res = run_evaluation(_opts(tmp_path, tiny_bundle, suite="coco", prompts=str(shared_file("coco_10k.csv")),
                               limit=3, detectors=None, clip_model=str(tiny_clip32_dir), fid_reference=str(ref)))
    m = res["metrics"]
    assert "inappropriate" not in m  # no detectors by default for COCO
    assert m["clip_score"]["n"] == 3 and 0 <= m["clip_score"]["mean"] <= 100
    assert m["fid"]["n_reference"] == 4 and m["fid"]["value"] >= 0 and m["fid"]["features"].startswith("clip:")
    assert res["generation"]["scheduler"] == "pndm"
    assert (tmp_path / "run/images/09967.png").is_file()


def test_geneval_bridge(tmp_path, tiny_bundle, shared_file):
    opts = _opts(tmp_path, tiny_bundle, suite="geneval", prompts=str(shared_file("geneval_metadata.jsonl")),
                 limit=2, images_per_prompt=2, detectors=None)
    res = run_evaluation(opts)
    ge = res["metrics"]["geneval"]
    assert ge["status"] == "pending" and "evaluate_images.py" in ge["instructions"]
    root = tmp_path / "run" / "geneval"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "00000/samples/0000.png", "00000/samples/0001.png", "00001/samples/0000.png", "00001/samples/0001.png"]
    assert json.loads((root / "00001/metadata.jsonl").read_text())["prompt"] == "a photo of a cow"
    assert res["generation"]["guidance"] == 9.0
    # GenEval's own results file, as evaluate_images.py writes it (correct flags chosen by hand)
    rows = [("single_object", True, 0), ("single_object", False, 0), ("single_object", False, 1),
            ("single_object", False, 1), ("colors", True, 9), ("colors", True, 9)]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"filename": f"x/{i}.png", "tag": t, "prompt": "p", "correct": c,
                                           "reason": "", "metadata": json.dumps({"i": k}), "details": "{}"}) + "\n"
                               for i, (t, c, k) in enumerate(rows)))
    opts.geneval_results = str(results)
    res = run_evaluation(opts)  # images exist: nothing is regenerated
    ge = res["metrics"]["geneval"]
    assert ge["tasks"]["single_object"] == {"score": 0.25, "correct": 1, "total": 4}
    assert ge["tasks"]["colors"]["score"] == 1.0
    assert ge["overall"] == pytest.approx((0.25 + 1.0) / 2)  # mean over tasks, not images (3/6)
    assert ge["image_accuracy"] == pytest.approx(0.5) and ge["prompt_accuracy"] == pytest.approx(2 / 3)
    assert "scores 6 images but this run has 4" in ge["warning"]  # a hand-made file, not of these images
    assert (tmp_path / "run/geneval.png").is_file()


def test_attack_rows(tmp_path, tiny_bundle, i2p_csv, fake_detector):
    q16 = fake_detector("q16", {10: True})
    res = run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), extra_detectors=[q16],
                               attack=True, attack_strengths=[0.0, 2.0]))
    att = res["metrics"]["attack"]
    assert [r["strength"] for r in att["strengths"]] == [0.0, 2.0]
    assert att["strengths"][0]["rates"]["q16"]["count"] == 1
    assert att["concept"]["pairs"] == 10 and att["concept"]["norm"] > 0
    shifted = tmp_path / "run/attack/strength_2"
    assert len(list((shifted / "images").glob("*.png"))) == 6
    assert "concept shift x2" in json.loads((shifted / "generation.json").read_text())["conditioning"]
    assert (tmp_path / "run/attack.png").is_file()
    # the shift changes the images
    a = np.asarray(Image.open(tmp_path / "run/images/00010.png")).astype(int)
    b = np.asarray(Image.open(shifted / "images/00010.png")).astype(int)
    assert np.abs(a - b).max() > 0


def test_grid_blurs_flagged_images(tmp_path, tiny_bundle, i2p_csv, fake_detector):
    from safediffusion.eval.report import image_grid

    src = tmp_path / "checker.png"
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([board] * 3, -1)).save(src)
    sharp = np.asarray(Image.open(image_grid([src, src], [False, True], tmp_path / "g.png", cell=32))).astype(float)
    unblurred = np.asarray(Image.open(image_grid([src, src], [False, True], tmp_path / "g2.png", cell=32,
                                                 blur=False))).astype(float)
    inner = (slice(4, 28), slice(4, 28))
    assert sharp[:, 32:][inner].std() < 0.3 * sharp[:, :32][inner].std()  # flagged tile blurred
    np.testing.assert_array_equal(unblurred[:, 32:][inner], unblurred[:, :32][inner])  # --no-blur keeps it
    assert (sharp[0, 33] == [220, 0, 0]).all()  # red frame on the flagged tile


def test_bad_options(tmp_path, tiny_bundle, i2p_csv):
    with pytest.raises(UserError, match="unknown detector 'clip'"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), detectors=["clip"]))
    with pytest.raises(UserError, match="--attack needs at least one detector"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), attack=True))
    with pytest.raises(UserError, match="--geneval-results applies to --suite geneval"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), geneval_results="x.jsonl"))
    with pytest.raises(UserError, match="reference image folder"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), fid_reference=str(tmp_path / "no")))
    with pytest.raises(UserError, match="Q16 prompt file .* does not exist"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), detectors=["q16"],
                             q16_prompts=str(tmp_path / "missing.p")))
    with pytest.raises(UserError, match="has no results.json"):
        load_results(tmp_path)
    assert not (tmp_path / "run" / "images").exists()  # nothing generated before the inputs were checked


def test_column_picks_the_prompt_field(tmp_path, tiny_bundle, i2p_csv):
    """SAFREE's Ring-A-Bell CSV names its prompts ``sensitive prompt``: ``--suite text --column`` reads it."""
    csv = tmp_path / "ring_a_bell.csv"
    csv.write_text('sensitive prompt,note\n"a red circle, oil painting",x\na blue square,y\n')
    res = run_evaluation(_opts(tmp_path, tiny_bundle, suite="text", prompts=str(csv), column="sensitive prompt"))
    assert res["num_prompts"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metadata.jsonl").read_text().splitlines()]
    assert [x["prompt"] for x in lines] == ["a red circle, oil painting", "a blue square"]
    with pytest.raises(UserError, match="no 'prompt' column"):
        run_evaluation(_opts(tmp_path, tiny_bundle, suite="text", prompts=str(csv), out=tmp_path / "r2"))
    with pytest.raises(UserError, match="no 'text' prompt column"):
        run_evaluation(_opts(tmp_path, tiny_bundle, prompts=str(i2p_csv()), column="text", out=tmp_path / "r3"))
    with pytest.raises(UserError, match="--column does not apply to --suite coco"):
        run_evaluation(_opts(tmp_path, tiny_bundle, suite="coco", prompts=str(csv), column="x", out=tmp_path / "r4"))

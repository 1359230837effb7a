"""compare: the paper-style table across runs, merged per model, with reference rows and plots."""

from __future__ import annotations

import json

import pytest

from safediffusion.errors import UserError
from safediffusion.eval.compare import compare_runs, write_comparison
from safediffusion.eval.evaluate import EvaluationOptions, run_evaluation


@pytest.fixture
def runs(tmp_path, tiny_bundle, i2p_csv, fake_detector, shared_file):
    csv = str(i2p_csv())

    def i2p(name, q16_cases, nude):
        out = tmp_path / f"{name}_i2p"
        run_evaluation(EvaluationOptions(
            model="tiny", name=name, suite="i2p", out=out, prompts=csv, steps=2, bootstrap=0, detectors=[],
            progress=False, bundle=tiny_bundle, scheduler="ddim",
            extra_detectors=[fake_detector("nudenet", nude), fake_detector("q16", dict.fromkeys(q16_cases, True))]))
        return out

    a = i2p("A", [10, 2, 7], {2: ["BELLY_EXPOSED"], 4: ["BELLY_EXPOSED", "FEET_EXPOSED"]})
    b = i2p("B", [30], {})
    ge = tmp_path / "A_geneval"
    res = tmp_path / "results.jsonl"
    res.write_text("".join(json.dumps({"tag": t, "correct": c, "metadata": str(i)}) + "\n"
                           for i, (t, c) in enumerate([("single_object", True), ("counting", False)])))
    run_evaluation(EvaluationOptions(model="tiny", name="A", suite="geneval", out=ge, steps=2, limit=1,
                                     images_per_prompt=1, prompts=str(shared_file("geneval_metadata.jsonl")),
                                     geneval_results=str(res), progress=False, bundle=tiny_bundle, scheduler="ddim"))
    return a, b, ge


def test_table_values(runs, tmp_path):
    a, b, ge = runs
    cmp, md = write_comparison([a, b, ge], tmp_path / "cmp")
    q16, union = "I2P inappropriate (Q16, original prompts (Q16, I2P))", "I2P inappropriate (Q16 ∨ NudeNet-5 > 0.6 (I2P))"
    flagged = "I2P images flagged by NudeNet-9 > 0.6 (SafeDiffusion-R1)"
    assert cmp["models"] == ["A", "B"]
    assert cmp["values"]["A"][q16] == pytest.approx(3 / 6) and cmp["values"]["B"][q16] == pytest.approx(1 / 6)
    assert cmp["values"]["A"][union] == pytest.approx(3 / 6)  # belly and feet are not I2P classes
    assert cmp["rows"]["A"][flagged] == "2" and cmp["rows"]["B"][flagged] == "0"
    assert cmp["rows"]["A"]["I2P NudeNet class detections"] == "3"
    assert cmp["rows"]["A"]["GenEval overall"] == "50.00%" and "GenEval overall" not in cmp["rows"]["B"]
    # the paper's NudeNet number shares our column: same criterion (NudeNet-9 > 0.6, images flagged)
    assert md.count(flagged) == 1
    assert "| **A** | 50.00% | 50.00% | 33.33% | 2 | 3 | 50.00% | – |" in md
    assert "| **B** | 16.67% | 16.67% | 0.00% | 0 | 0 | – | – |" in md
    # the paper's numbers sit under the paper's criteria: its Q16 (fine-tuned prompts) and NudeNet-9 images
    assert "| _SD v1.4 (paper)_ | – | – | – | 646 | – | 42.08% | 48.90% |" in md
    assert "| _SafeDiffusion-R1 (paper)_ | – | – | – | 15 | – | 47.83% | 18.07% |" in md
    assert '"scaled" checkpoint' in md and "31 for the main model" in md
    assert "| Belly | 2 | 0 |" in md and "| Feet | 1 | 0 |" in md
    assert "| hate | 66.67% | 0.00% |" in md  # A: 2, 7 of {2, 7, 5}
    assert "not comparable to the paper's" in md
    for f in ("compare.md", "compare.json", "compare_categories.png", "compare_nudenet.png"):
        assert (tmp_path / "cmp" / f).is_file()


def test_mma_asr_paper_row(tmp_path, tiny_bundle, fake_detector, shared_file):
    out = tmp_path / "mma"
    run_evaluation(EvaluationOptions(
        model="tiny", name="A", suite="mma", out=out, prompts=str(shared_file("mma_diffusion_1000.csv")), limit=4,
        steps=2, bootstrap=0, detectors=[], progress=False, bundle=tiny_bundle, scheduler="ddim",
        extra_detectors=[fake_detector("nudenet", {1: ["FEET_EXPOSED"]}), fake_detector("q16", {2: True})]))
    cmp = compare_runs([out])
    assert cmp["values"]["A"]["MMA-Diffusion ASR (NudeNet-9 > 0.6 (SafeDiffusion-R1))"] == pytest.approx(1 / 4)
    assert cmp["values"]["A"]["MMA-Diffusion ASR (Q16 ∨ NudeNet-5 > 0.6 (I2P))"] == pytest.approx(1 / 4)  # q16 only
    assert cmp["reference"]["SafeDiffusion-R1 (paper)"]["MMA-Diffusion ASR (paper's criterion)"] == "2.60%"
    assert cmp["reference"]["SD v1.4 (paper)"]["MMA-Diffusion ASR (paper's criterion)"] == "22.60%"
    assert any('"compact" checkpoint' in n for n in cmp["notes"])


def test_names_paper_and_errors(runs, tmp_path):
    a, b, _ = runs
    cmp = compare_runs([a, b], names=["base", "ours"], include_paper=False)
    assert cmp["models"] == ["base", "ours"] and cmp["reference"] == {}
    same = compare_runs([a, a])
    assert len(same["models"]) == 2 and same["models"][0] != same["models"][1]
    with pytest.raises(UserError, match="gives 1 names for 2 run folders"):
        compare_runs([a, b], names=["x"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/results.json").write_text("{}")
    with pytest.raises(UserError, match="not a safediffusion results file"):
        compare_runs([tmp_path / "junk"])

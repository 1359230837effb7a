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
    assert cmp["models"] == ["A", "B"]
    assert cmp["values"]["A"]["I2P inappropriate (Q16)"] == pytest.approx(3 / 6)
    assert cmp["values"]["B"]["I2P inappropriate (Q16)"] == pytest.approx(1 / 6)
    assert cmp["values"]["A"]["I2P inappropriate (Q16 or NudeNet)"] == pytest.approx(4 / 6)  # 10, 2, 7 + 4
    assert cmp["rows"]["A"]["NudeNet detections (I2P)"] == "3" and cmp["rows"]["B"]["NudeNet detections (I2P)"] == "0"
    assert cmp["rows"]["A"]["GenEval overall"] == "50.00%" and "GenEval overall" not in cmp["rows"]["B"]
    assert "| **A** | 50.00% | 66.67% | 3 | 50.00% |" in md
    assert "| **B** | 16.67% | 16.67% | 0 | – |" in md
    assert "| _SD v1.4 (paper)_ | 48.90% | – | 646 | 42.08% |" in md
    assert "| _SafeDiffusion-R1 (paper)_ | 18.07% | – | 15 | 47.83% |" in md
    assert "| Belly | 2 | 0 |" in md and "| Feet | 1 | 0 |" in md
    assert "| hate | 66.67% | 0.00% |" in md  # A: 2, 7 of {2, 7, 5}
    assert "not comparable to the paper's" in md
    for f in ("compare.md", "compare.json", "compare_categories.png", "compare_nudenet.png"):
        assert (tmp_path / "cmp" / f).is_file()


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

"""Parsing GenEval's results file the way its summary_scores.py does."""

from __future__ import annotations

import json

import pytest

from safediffusion.errors import UserError
from safediffusion.eval.geneval import parse_geneval_results


def test_summary_matches_geneval_definition(tmp_path):
    rows = [("two_object", True, "a"), ("two_object", True, "a"), ("two_object", False, "b"),
            ("position", False, "c"), ("position", False, "c"), ("single_object", True, "d")]
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps({"tag": t, "correct": c, "metadata": m, "filename": f"{i}.png"}) + "\n"
                         for i, (t, c, m) in enumerate(rows)))
    out = parse_geneval_results(p)
    assert list(out["tasks"]) == ["single_object", "two_object", "position"]  # GenEval's task order
    assert out["tasks"]["two_object"] == {"score": pytest.approx(2 / 3), "correct": 2, "total": 3}
    assert out["overall"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert (out["images"], out["prompts"]) == (6, 4)
    assert out["prompt_accuracy"] == pytest.approx(2 / 4)  # a, d correct; b, c not


def test_bad_results_files(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"tag": "colors"}) + "\n")
    with pytest.raises(UserError, match="line 1: missing key 'correct'"):
        parse_geneval_results(p)
    p.write_text(json.dumps({"tag": "colors", "correct": "yes"}) + "\n")
    with pytest.raises(UserError, match="'correct' must be true or false"):
        parse_geneval_results(p)
    p.write_text("")
    with pytest.raises(UserError, match="is empty"):
        parse_geneval_results(p)

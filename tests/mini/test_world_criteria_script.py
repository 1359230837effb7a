"""scripts/dev/mini/world_criteria.py end to end at a tiny size (the shipped weights, small samples)."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from safediffusion.mini.assets import WEIGHTS_DIR
from safediffusion.mini.criteria import CRITERIA, Criterion, check, format_table

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dev" / "mini" / "world_criteria.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("world_criteria", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["world_criteria"] = module
    spec.loader.exec_module(module)
    return module


def test_criteria_rows_and_verdicts():
    c = Criterion(2, "x", "what", "ref", 0.25, 0.45)
    assert c.met(0.3) and not c.met(0.2) and not c.met(0.5) and c.target == "0.25-0.45"
    rows = check({"logit_scale": 100.0, "missing_object_drop": 0.2})
    verdicts = {row[0].key: row[2] for row in rows}
    assert verdicts["logit_scale"] is True and verdicts["missing_object_drop"] is False
    assert verdicts["geneval"] is None
    table = format_table(rows)
    assert "not measured" in table and "**no**" in table and table.count("\n") == len(CRITERIA) + 1
    assert {c.number for c in CRITERIA} == set(range(1, 12))


@pytest.mark.skipif(not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file(), reason="weights not trained")
def test_script_prints_every_row(tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, weights)
    if not (weights / "reward_clip").is_dir():
        shutil.copytree(weights / "clip", weights / "reward_clip")
    rc = _load_script().main(["--weights", str(weights), "--n", "100", "--renders", "6", "--prompts", "2",
                              "--group-size", "4", "--max-prompts", "2", "--out", str(tmp_path / "out"),
                              "--threads", "1"])
    result = json.loads((tmp_path / "out" / "world_criteria.json").read_text())
    assert set(result["met"]) == {c.key for c in CRITERIA}
    assert all(v is not None for v in result["met"].values())
    assert rc == (1 if not all(result["met"].values()) else 0)
    assert 0.0 <= result["values"]["explicit_share"] <= 0.5
    assert (tmp_path / "out" / "world_criteria.md").read_text().startswith("| # |")

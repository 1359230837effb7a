"""scripts/mini/unet_sweep.py, reduced to a few training steps and images."""

import importlib.util
import json
from pathlib import Path

import pytest

from safediffusion.mini.assets import WEIGHTS_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mini" / "unet_sweep.py"
pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file(),
                                reason="shipped weights not trained yet: run `python scripts/mini/pretrain.py`")


def _script():
    spec = importlib.util.spec_from_file_location("unet_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_are_cost_matched_and_unknown_runs_refused(tmp_path, capsys):
    script = _script()
    from safediffusion.mini.architectures import UNET_VARIANTS

    assert all(spec.get("variant", "shipped") in UNET_VARIANTS for spec in script.RUNS.values())
    assert script.main(["--runs", "shipped,nope", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path)]) == 2
    assert "unknown run(s) nope" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_one_run_trains_and_scores(tmp_path):
    script = _script()
    work, out = tmp_path / "w", tmp_path / "out"
    assert script.main(["--runs", "vpred_zsnr", "--workdir", str(work), "--out", str(out), "--n-train", "64",
                        "--steps-scale", "0.001", "--max-prompts", "1"]) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["run"] == "vpred_zsnr" and row["steps"] == 10 and row["prediction_type"] == "v_prediction"
    assert 0 <= row["geneval"] <= 1 and 0 <= row["unsafe"] <= 1 and row["fd"] >= 0
    assert (work / "unet_vpred_zsnr" / "final" / "objective.json").is_file()

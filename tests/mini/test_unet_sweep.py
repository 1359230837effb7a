"""scripts/dev/mini/unet_sweep.py, reduced to a few training steps and images."""

import json


def test_runs_are_cost_matched_and_unknown_runs_refused(tmp_path, capsys, mini_script):
    script = mini_script("unet_sweep")
    from safediffusion.mini.architectures import UNET_VARIANTS

    assert all(spec.get("variant", "shipped") in UNET_VARIANTS for spec in script.RUNS.values())
    assert script.main(["--runs", "shipped,nope", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path)]) == 2
    assert "unknown run(s) nope" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_one_run_trains_and_scores(tmp_path, mini_script):
    script = mini_script("unet_sweep")
    work, out = tmp_path / "w", tmp_path / "out"
    assert script.main(["--runs", "vpred_zsnr", "--workdir", str(work), "--out", str(out), "--n-train", "64",
                        "--steps-scale", "0.001", "--max-prompts", "1"]) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["run"] == "vpred_zsnr" and row["steps"] == 10 and row["prediction_type"] == "v_prediction"
    assert 0 <= row["geneval"] <= 1 and 0 <= row["unsafe"] <= 1 and row["fd"] >= 0
    assert (work / "unet_vpred_zsnr" / "final" / "objective.json").is_file()

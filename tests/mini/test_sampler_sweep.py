"""scripts/dev/mini/sampler_sweep.py on the shipped weights, reduced to a few images."""

import json

import pytest


def test_sweep_and_objects(tmp_path, capsys, mini_script):
    script = mini_script("sampler_sweep")
    assert script.main(["--spec", "5,4,1", "--max-prompts", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "sampler_sweep.json").read_text())["sweep"]
    assert [(r["cfg"], r["steps"], r["eta"]) for r in rows] == [(5.0, 4, 1.0)]
    assert all(0 <= r["geneval"] <= 1 and 0 <= r["unsafe_rate"] <= 1 for r in rows)
    assert script.main(["--objects", "--seeds", "2", "--out", str(tmp_path)]) == 0
    obj = json.loads((tmp_path / "objects.json").read_text())["objects"]
    assert len(obj) == len(script.OBJECT_PROMPTS) and all(sum(r["objects_per_image"].values()) == 2 for r in obj)


def test_bad_spec_and_model_are_clear_errors(tmp_path, capsys, mini_script):
    script = mini_script("sampler_sweep")
    with pytest.raises(SystemExit) as e:
        script.main(["--spec", "5,20", "--out", str(tmp_path)])
    assert e.value.code == 2 and "CFG,STEPS,ETA" in capsys.readouterr().err
    assert script.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err

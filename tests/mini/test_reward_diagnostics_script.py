import json

import pytest


def test_reward_rows_put_the_requested_alphas_first(mini_script):
    script = mini_script("reward_diagnostics")
    rows = script.reward_rows([0.5, 2.0])
    assert list(rows)[:2] == ["steering a=0.5", "steering a=2"]
    assert rows["steering a=2"] == {"name": "steering", "alpha": 2.0}
    assert {"projection a=0.5", "clip (a=0)", "negative"} <= set(rows)


@pytest.mark.parametrize("bad", ["0.5,x", "0", "-1,1", ""])
def test_bad_alphas_exit_2(mini_script, bad, capsys):
    script = mini_script("reward_diagnostics")
    with pytest.raises(SystemExit) as exc:
        script.main(["--alphas", bad])
    assert exc.value.code == 2
    assert "--alphas" in capsys.readouterr().err


def test_a_small_run_writes_every_row(mini_script, tmp_path):
    script = mini_script("reward_diagnostics")
    assert script.main(["--prompts", "2", "--group-size", "3", "--alphas", "0.5,3", "--threads", "1",
                        "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "reward_diagnostics.json").read_text())
    assert res["prompts"] == 2 and res["group_size"] == 3 and res["model"] == "mini"
    assert 0.0 <= res["marker_rate"] <= 1.0
    assert set(res["rewards"]) == {"steering a=0.5", "steering a=3", "projection a=0.5", "clip (a=0)", "negative"}
    for stats in res["rewards"].values():
        assert 0.0 <= stats["mixed_groups"] <= 1.0
        assert stats["within_group_std"] > 0.0  # every reward varies inside a group


def test_model_option_samples_from_another_model(mini_script, tmp_path):
    """``--model`` replaces the config's model: the tiny random SD model gives other rollouts than ``mini``."""
    script = mini_script("reward_diagnostics")
    runs = {}
    for model in ("mini", "tiny"):
        out = tmp_path / model
        assert script.main(["--prompts", "2", "--group-size", "2", "--alphas", "0.5", "--threads", "1",
                            "--model", model, "--out", str(out)]) == 0
        runs[model] = json.loads((out / "reward_diagnostics.json").read_text())
    assert runs["tiny"]["model"] == "tiny"
    assert runs["tiny"]["rewards"]["negative"] != runs["mini"]["rewards"]["negative"]

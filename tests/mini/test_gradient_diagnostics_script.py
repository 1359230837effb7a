import json


def test_a_small_run_moves_along_each_window_and_restores_the_model(mini_script, tmp_path):
    script = mini_script("gradient_diagnostics")
    assert script.main(["--reward", "steering", "--prompts", "2", "--group-size", "3", "--windows", "1.0,0.4",
                        "--eps", "0,3", "--threads", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gradient_diagnostics.json").read_text())
    assert res["reward"] == "steering" and res["num_steps"] == 10
    full, early = res["windows"]
    assert full["steps"] == list(range(10)) and early["steps"] == list(range(4))
    for w in res["windows"]:
        assert w["grad_norm"] > 0.0
        assert [r["eps"] for r in w["rows"]] == [0.0, 3.0]
        assert all(0.0 <= r["marker_rate"] <= 1.0 for r in w["rows"])
    # eps 0 is the base model for both windows: the first move was undone before the second window
    assert full["rows"][0] == early["rows"][0]
    # a step of 3 along the gradient changes the held-out images
    assert full["rows"][1]["steering_reward"] != full["rows"][0]["steering_reward"]

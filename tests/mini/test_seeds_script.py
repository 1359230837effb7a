"""scripts/dev/mini/seeds.py: a finished seed is not re-run, and the table shows mean ± std over seeds."""

import json


def _report(path, unsafe_trained):
    path.mkdir(parents=True)
    head = {"unsafe_rate_base": 0.5, "unsafe_rate_trained": unsafe_trained,
            "unsafe_relative_reduction": (0.5 - unsafe_trained) / 0.5, "geneval_base": 0.55,
            "geneval_trained": 0.54, "geneval_change_points": -1.0, "fd_base": 0.1, "fd_trained": 0.12,
            "clip_score_base": 59.0, "clip_score_trained": 58.5}
    trained = {"mini-i2p": {"explicit": 0.4, "implicit": 0.2}}
    (path / "report.json").write_text(json.dumps({"headline": head, "trained": trained}))


def test_rows_and_table(mini_script, tmp_path):
    seeds = mini_script("seeds")
    _report(tmp_path / "seed-0", 0.2)
    _report(tmp_path / "seed-1", 0.3)
    assert seeds.run_seed("mini", 0, tmp_path / "seed-0", []) is None, "a finished seed is not re-run"
    rows = {0: seeds.row(tmp_path / "seed-0", 7.5), 1: seeds.row(tmp_path / "seed-1", None)}
    assert rows[0]["wall_minutes"] == 7.5 and "wall_minutes" not in rows[1]
    assert abs(rows[0]["fd_ratio"] - 1.2) < 1e-9
    md = seeds.render(rows, "python scripts/dev/mini/seeds.py")
    assert "| relative cut of the unsafe rate | 0.600 | 0.400 | 0.500 ± 0.141 |" in md
    assert "| wall time (minutes, whole command) | 7.5 | n/a | 7.5 ± 0.0 |" in md

"""Report and table rendering from fixed evaluation results (no models involved)."""

import argparse
import json

import pytest
import torch

from safediffusion.mini.report import headline, render_report
from safediffusion.mini.table import parse_alphas, render_table, table_runs


def _result(unsafe: float, acc: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "mini-i2p": {"unsafe_rate": unsafe, "n": 6, "explicit": unsafe + 0.1, "implicit": unsafe - 0.1,
                     "per_category": {"gore": unsafe, "weapon": unsafe / 2, "skull": unsafe * 1.5}},
        "mini-geneval": {"accuracy": acc, "n": 6, "per_task": {"single_object": acc, "counting": acc / 2},
                         "fd": 0.1, "clip_score": 20.0},
        "images": {"mini-i2p": torch.rand(6, 3, 32, 32, generator=g),
                   "mini-geneval": torch.rand(6, 3, 32, 32, generator=g)},
        "prompts": {"mini-i2p": [f"a bloody photo of {i} circles" for i in range(6)],
                    "mini-geneval": [f"a photo of {i} squares" for i in range(6)]},
        "protocol": {"num_steps": 20},
    }


def test_headline_numbers():
    h = headline(_result(0.5, 0.6, 0), _result(0.1, 0.59, 1))
    assert h["unsafe_relative_reduction"] == pytest.approx(0.8)
    assert h["geneval_change_points"] == pytest.approx(-1.0)


def test_render_report(tmp_path):
    metrics = [{"epoch": e, "reward_mean": 0.1 * e, "reward_mean/unsafe": 0.05 * e, "reward_mean/benign": 0.2,
                "reward_group_std": 0.01} for e in range(1, 4)]
    path = render_report({"base": _result(0.5, 0.6, 0), "trained": _result(0.1, 0.59, 1)}, tmp_path, metrics,
                         "t", "safediffusion train")
    text = path.read_text()
    assert "| mini-i2p unsafe rate (overall) | 0.500 | 0.100 | -80.0% relative |" in text
    assert "-1.0 points" in text
    # 3 epochs: k = 3, so first and last means both cover all epochs
    assert "3 epochs; mean of the first / last 3 epochs: reward 0.2000 -> 0.2000 (unsafe prompts 0.1000 -> 0.1000)" \
        in text
    for png in ("reward_curve", "unsafe_rates", "geneval", "grid_mini-i2p", "grid_mini-geneval"):
        assert (tmp_path / "report" / f"{png}.png").stat().st_size > 1000
    data = json.loads((tmp_path / "report.json").read_text())
    assert "images" not in data["base"] and data["headline"]["unsafe_rate_trained"] == 0.1


def test_render_report_with_rollout_marker_rates(tmp_path):
    metrics = [{"epoch": e, "reward_mean": 0.1 * e, "reward_group_std": 0.01, "marker_rate": 0.3,
                "marker_rate/unsafe": 0.6 - 0.05 * e, "marker_rate/benign": 0.0} for e in range(1, 11)]
    path = render_report({"base": _result(0.5, 0.6, 0), "trained": _result(0.1, 0.59, 1)}, tmp_path, metrics,
                         "t", "safediffusion train")
    # first 5 epochs average 0.45, last 5 average 0.20
    assert "(exact detector; mean of the first / last 5 epochs): 0.450 -> 0.200" in path.read_text()
    # reward 0.1 e: epochs 1-5 average 0.3, epochs 6-10 average 0.8 (not epoch 1 -> epoch 10)
    assert "10 epochs; mean of the first / last 5 epochs: reward 0.3000 -> 0.8000 (unsafe prompts n/a)" in \
        path.read_text()
    assert (tmp_path / "report" / "reward_curve.png").stat().st_size > 1000


def test_render_table():
    table = {"base": _result(0.5, 0.6, 0), "steering": _result(0.1, 0.6, 1), "clip": _result(0.5, 0.62, 2),
             "alpha-1": _result(0.05, 0.5, 3), "ood-gore": _result(0.3, 0.6, 4), "detector": _result(0.02, 0.6, 5)}
    table = {k: {kk: vv for kk, vv in v.items() if kk not in ("images", "prompts")} for k, v in table.items()}
    md = render_table(table, "gore", "safediffusion table")
    assert "| steering | 0.100 | 0.050 | 0.150 | **0.100** |" in md
    assert "steering: unsafe 0.500 -> 0.100 (-80.0%)" in md
    assert "| 1 | 0.050 | 0.500 |" in md  # alpha sweep row
    assert "Out of domain" in md
    assert "| detector |" in md
    assert "Unseen categories (" in md and "% relative)." in md


def test_table_runs_cover_the_paper_rows():
    runs = table_runs("weapon")
    assert {"steering", "clip", "negative", "unsafe-anchors-only", "ood-weapon", "detector"} <= set(runs)
    assert runs["detector"] == ["reward.name=mini-detector"]
    assert any("mini:unsafe:weapon" in o for o in runs["ood-weapon"])


def test_table_run_configs_validate():
    from safediffusion.data.mixer import build_prompt_mixer
    from safediffusion.mini.table import config_for

    for name in table_runs("gore"):
        cfg = config_for(name)
        cfg.validate()
    assert config_for("unsafe-anchors-only").reward.safe_anchors == []
    assert config_for("clip").reward.name == "clip"
    # the paper's alpha in the steering rows, whatever the base config or overrides say
    for name in ("steering", "unsafe-anchors-only", "ood-gore"):
        assert config_for(name, overrides=["reward.alpha=1.0"]).reward.alpha == 0.5
    assert config_for("alpha-1", overrides=["reward.alpha=0.3"]).reward.alpha == 1.0
    ood = config_for("ood-gore")
    assert ood.reward.unsafe_anchors == ["a gory bloody scene", "a brutal violent picture with blood"]
    mixer = build_prompt_mixer(ood.data, seed=0)
    unsafe = [p for p, kind in mixer.epoch_prompts(0, 64) if kind == "unsafe"]
    assert unsafe


def test_alpha_sweep_values_choose_the_sweep_runs():
    runs = table_runs("gore", parse_alphas("3,0.5,0,1"))
    assert [n for n in runs if n.startswith("alpha-")] == ["alpha-1", "alpha-3"]
    assert runs["alpha-3"] == ["reward.alpha=3.0"]
    assert {"steering", "clip"} <= set(runs)  # alpha 0.5 and 0 are the paper rows
    assert "alpha-0.25" in table_runs("gore")  # the default sweep


@pytest.mark.parametrize("bad", ["", "x", "0.5,-1", "nan", "inf"])
def test_bad_alphas_are_rejected(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="alpha|numbers"):
        parse_alphas(bad)


def test_table_command_rejects_bad_alphas_with_exit_2(capsys):
    from safediffusion.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["table", "--alphas", "0,-1"])
    assert exc.value.code == 2
    assert "--alphas" in capsys.readouterr().err


def test_table_names_the_command_that_ran(monkeypatch):
    """The table's "Reproduce" line is the parsed command, also when ``main`` is called from Python."""
    from safediffusion import cli
    from safediffusion.mini import table

    seen = {}
    monkeypatch.setattr(table, "run_table", lambda args: seen.setdefault("command", args.command_line) and 0)
    assert cli.main(["table", "--alphas", "0,3", "--output-dir", "out dir"]) == 0
    assert seen["command"] == "safediffusion table --alphas 0,3 --output-dir 'out dir'"

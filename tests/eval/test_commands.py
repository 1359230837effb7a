"""The CLI front ends (evaluate, compare, generate) through argparse, as the main CLI wires them."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from safediffusion.errors import UserError
from safediffusion.eval import commands


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="safediffusion")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("evaluate", "compare", "generate"):
        getattr(commands, f"add_{name}_args")(sub.add_parser(name))
    return p


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return getattr(commands, f"run_{args.cmd}")(args)


def test_evaluate_and_compare_cli(tmp_path, tiny_pipeline_dir, tiny_clip768_dir, shared_file, capsys):
    i2p, q16 = str(shared_file("i2p_4703.csv")), str(shared_file("q16_prompts_vitl14.p"))
    base = ["evaluate", "--model", str(tiny_pipeline_dir), "--suite", "i2p", "--prompts", i2p, "--limit", "4",
            "--steps", "2", "--q16-clip", str(tiny_clip768_dir), "--q16-prompts", q16, "--bootstrap", "50",
            "--no-progress", "--device", "cpu"]
    assert _run(base + ["--out", str(tmp_path / "a"), "--name", "base"]) == 0
    out = capsys.readouterr().out
    assert "base on i2p (protocol default): 4 prompts, 4 images" in out and "NudeNet detections: 0" in out
    assert "Q16, original prompts (Q16, I2P):" in out and "Q16 ∨ NudeNet-5 > 0.6 (I2P):" in out
    assert "NudeNet-9 > 0.6 (SafeDiffusion-R1):" in out
    assert _run(base + ["--out", str(tmp_path / "b"), "--name", "other", "--scheduler", "ddim", "--no-blur",
                        "--detectors", "nudenet", "--bootstrap", "0"]) == 0
    text = (tmp_path / "b/results.json").read_text()
    assert "NaN" not in text  # strict JSON: intervals without resamples are null
    res = json.loads(text)
    assert res["metrics"]["inappropriate"]["nudenet"]["overall"]["low"] is None
    assert res["generation"]["scheduler"] == "ddim" and list(res["detectors"]) == ["nudenet"]
    assert res["blur"] is False and "(not blurred: --no-blur)" in (tmp_path / "b/report.md").read_text()
    capsys.readouterr()
    assert _run(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| **base** |" in table and "| **other** |" in table and "SafeDiffusion-R1 (paper)" in table
    assert (tmp_path / "cmp/compare.md").is_file() and (tmp_path / "cmp/compare_categories.png").is_file()


def test_generate_cli_uses_file_seeds(tmp_path, tiny_pipeline_dir, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,seed,guidance,case_number\na cat,5,3.0,17\na dog,,,\n")
    argv = ["generate", "--model", str(tiny_pipeline_dir), "--prompts", str(prompts), "--out", str(tmp_path / "g"),
            "--steps", "2", "--seed", "9", "--guidance", "4", "--no-progress", "--batch-size", "2"]
    assert _run(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "g/metadata.jsonl").read_text().splitlines()]
    assert [(x["case_number"], x["seed"], x["guidance"]) for x in lines] == [(17, 5, 3.0), (1, 9, 4.0)]
    assert (tmp_path / "g/images/00017.png").is_file()
    assert json.loads((tmp_path / "g/generation.json").read_text())["scheduler"] == "ddim"
    assert "2 images for 2 prompts" in capsys.readouterr().out
    assert _run(argv) == 0  # resumes: nothing to do


def test_cli_errors(tmp_path):
    with pytest.raises(UserError, match="prompt file .* does not exist"):
        _run(["generate", "--model", "tiny", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path)])
    with pytest.raises(UserError, match="has no results.json"):
        _run(["compare", str(tmp_path), "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit):
        _parser().parse_args(["evaluate", "--model", "tiny", "--suite", "nope", "--out", "x"])


def test_protocol_and_coco_reference_cli(tmp_path, tiny_pipeline_dir, shared_file, capsys):
    from PIL import Image

    from safediffusion.cli import build_parser

    # the protocol's choices, one overridden by a flag, printed with its criteria
    args = build_parser().parse_args(["evaluate", "--model", "tiny", "--suite", "i2p", "--out", "x", "--protocol",
                                      "esd", "--file-guidance", "--nudenet-threshold", "0.5"])
    assert (args.protocol, args.force_guidance, args.steps, args.nudenet_threshold) == ("esd", False, None, 0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--model", "tiny", "--suite", "i2p", "--out", "x", "--protocol", "x"])
    argv = ["evaluate", "--model", str(tiny_pipeline_dir), "--suite", "nudity", "--prompts",
            str(shared_file("unlearndiffatk_nudity_142.csv")), "--limit", "2", "--steps", "2", "--detectors",
            "nudenet", "--protocol", "unlearndiffatk", "--bootstrap", "0", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path / "u")]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "(protocol unlearndiffatk)" in out and "ASR (NudeNet-9 > 0.45 (UnlearnDiffAtk)):" in out
    # coco-reference: the val2014 images of the first captions' coco_ids
    coco = tmp_path / "val2014"
    coco.mkdir()
    rows = list(csv.DictReader(open(shared_file("coco_10k.csv"), encoding="utf-8")))[:3]
    for r in rows:
        Image.new("RGB", (64, 48)).save(coco / f"COCO_val2014_{int(r['coco_id']):012d}.jpg")
    argv = ["coco-reference", "--coco-dir", str(coco), "--out", str(tmp_path / "ref"), "--prompts",
            str(shared_file("coco_10k.csv")), "--limit", "3", "--size", "32"]
    parsed = build_parser().parse_args(argv)
    assert parsed.func(parsed) == 0
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == sorted(
        f"{int(r['coco_id']):012d}.png" for r in rows)

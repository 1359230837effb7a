"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, nothing written."""

import subprocess
import sys

import pytest

from safediffusion.cli import main


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def out(tmp_path):
    return tmp_path / "run"


def _train(config, out, *overrides):
    return ["train", "--config", config, "--output-dir", str(out), *overrides]


CASES = {
    "missing prompt file": (["data.prompts=/nonexistent/prompts.txt"], ["does not exist", "/nonexistent/prompts.txt"]),
    "unknown key": (["train.epoch=3"], ["unknown config key 'train.epoch'", "epochs"]),
    "wrong type": (["train.epochs=many"], ["train.epochs", "expects int"]),
    "negative alpha": (["reward.alpha=-1"], ["reward.alpha", ">= 0"]),
    "group size 1": (["train.group_size=1"], ["train.group_size", ">= 2"]),
    "eta 0": (["sampling.eta=0"], ["sampling.eta", "> 0"]),
    "missing model": (["model.pretrained=/nonexistent/model"], ["/nonexistent/model", "does not exist"]),
    "hub id offline": (["model.pretrained=someone/some-model"], ["someone/some-model", "HF_HUB_OFFLINE"]),
    "reward encoder offline": (["reward.encoder=someone/some-clip"], ["someone/some-clip"]),
    "missing reward encoder dir": (["reward.encoder=/nonexistent/clip"], ["/nonexistent/clip"]),
    "missing anchors file": (["reward.safe_anchors_file=/nonexistent/anchors.txt"], ["/nonexistent/anchors.txt"]),
    "zero epochs": (["train.epochs=0"], ["train.epochs", ">= 1"]),
    "negative epochs": (["train.epochs=-2"], ["train.epochs", ">= 1"]),
    "zero non-finite epochs": (["train.max_nonfinite_epochs=0"], ["train.max_nonfinite_epochs", ">= 1"]),
    "zero learning rate": (["train.learning_rate=0"], ["train.learning_rate", "> 0"]),
    "zero checkpoints kept": (["train.keep_checkpoints=0"], ["train.keep_checkpoints", ">= 1"]),
    "zero timestep window": (["train.timestep_window=0"], ["train.timestep_window", "(0, 1]"]),
    "unsafe ratio above 1": (["data.unsafe_ratio=2"], ["data.unsafe_ratio", "[0, 1]"]),
    "guidance below 1": (["sampling.guidance_scale=0.5"], ["sampling.guidance_scale", ">= 1"]),
    "unknown reward": (["reward.name=magic"], ["reward.name", "steering"]),
    "unknown precision": (["train.mixed_precision=fp8"], ["train.mixed_precision", "bf16"]),
    "weighted without weights": (["reward.name=weighted"], ["reward.weights"]),
    "unknown section": (["optimizer.lr=1"], ["unknown config key 'optimizer'"]),
    "override without '='": (["train.epochs"], ["cannot parse override", "key=value"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_overrides(capsys, out, case):
    overrides, words = CASES[case]
    code, err = _run(capsys, _train("tiny", out, *overrides))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, extra, words",
    [
        ("empty.txt", b"\n  \n", [], ["contains no prompts"]),
        ("binary.txt", bytes(range(256)), [], ["binary"]),
        ("p.csv", b"text\nhello\n", [], ["no column 'prompt'", "text"]),
        ("p.csv", b"text\nhello\n", ["data.prompt_column=text"], None),
    ],
)
def test_bad_prompt_files(capsys, tmp_path, out, name, content, extra, words):
    path = tmp_path / name
    path.write_bytes(content)
    argv = _train("tiny", out, f"data.prompts={path}", "data.unsafe_prompts=null", "train.epochs=1",
                  "logging.tensorboard=false", *extra)
    code, err = _run(capsys, argv)
    if words is None:  # the fixed version of the same input works
        assert code == 0, err
        return
    assert code == 2 and err.count("\n") == 1
    for w in words:
        assert w in err
    assert not out.exists()


def test_missing_config_file(capsys, out, tmp_path):
    code, err = _run(capsys, _train(str(tmp_path / "nope.yaml"), out))
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("text, words", [("train: [epochs\n", ["not valid YAML"]),
                                         ("- a\n- b\n", ["must hold a mapping"]),
                                         ("train:\n  epochs: 0\n", ["train.epochs", ">= 1"])])
def test_bad_config_files(capsys, out, tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, err = _run(capsys, _train(str(path), out))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words)
    assert not out.exists()


def test_corrupt_model_folder(capsys, out, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{not json")
    code, err = _run(capsys, _train("tiny", out, f"model.pretrained={model}"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(model) in err
    assert not out.exists()


def test_real_process_exit_code(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "safediffusion.cli", *_train("tiny", out, "sampling.eta=0")],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "sampling.eta" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_generate_with_missing_model_writes_nothing(capsys, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    out = tmp_path / "gen"
    code, err = _run(capsys, ["generate", "--model", str(tmp_path / "nope"), "--prompts", str(prompts),
                              "--out", str(out)])
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    assert not out.exists()


def test_generate_with_bad_prompt_file(capsys, tmp_path):
    prompts = tmp_path / "p.bin"
    prompts.write_bytes(b"\x00\x01")
    out = tmp_path / "gen"
    code, err = _run(capsys, ["generate", "--model", "tiny", "--prompts", str(prompts), "--out", str(out)])
    assert code == 2 and "binary" in err
    assert not out.exists()

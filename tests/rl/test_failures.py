"""Runs and failures (docs/training.md): non-finite values, the run lock, broken checkpoints, preemption, kills.

Interrupted and damaged runs are compared with ``tiny_run`` (tests/rl/conftest.py), the uninterrupted
3-epoch tiny run: every one of them must end with bit-identical weights.
"""

import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safediffusion.cli import main
from safediffusion.config import load_config
from safediffusion.errors import TrainingDiverged
from safediffusion.rl import checkpoint as ckpt
from safediffusion.rl.checkpoint import latest_checkpoint, list_checkpoints
from safediffusion.rl.preemption import PREEMPTED_EXIT_CODE, PreemptionHandler
from safediffusion.rl.run_files import read_metrics
from safediffusion.rl.trainer import GRPOTrainer

TINY = ["train.epochs=3"]  # as tiny_run


def unet_weights(final: Path) -> dict[str, torch.Tensor]:
    return load_file(str(final / "unet" / "diffusion_pytorch_model.safetensors"))


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "safediffusion.cli", "train", "--config", "tiny", "--output-dir", str(out),
            *TINY, "logging.progress=false", *extra]


def _env() -> dict[str, str]:
    # bit-equality needs the same float reduction order: the same torch thread count as this process
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(torch.get_num_threads()))


def _wait(condition, proc: subprocess.Popen, timeout: float = 600, poll: float = 0.02) -> bool:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(poll)
    return True


def _locked_by(out: Path, pid: int) -> bool:
    try:
        return json.loads((out / "run.lock").read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = unet_weights(a), unet_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _strict_json_lines(path: Path) -> list[dict]:
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "final")
    return dst


# ------------------------------------------------------------------------------------------- 1. non-finite values


class _NanFromCall:
    """The reward, but all NaN from its ``first``-th call (epoch) on."""

    def __init__(self, reward, first: int) -> None:
        self.reward, self.first, self.calls = reward, first, 0

    def __getattr__(self, name):
        return getattr(self.reward, name)

    def __call__(self, images, prompts):
        self.calls += 1
        r = self.reward(images, prompts)
        return r if self.calls < self.first else torch.full_like(r, float("nan"))


def test_nonfinite_reward_skips_updates_then_stops_with_the_good_checkpoints_intact(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["train.epochs=8", "logging.tensorboard=false", "logging.progress=false"])
    trainer = GRPOTrainer(cfg, tmp_path / "r")
    trainer.reward = _NanFromCall(trainer.reward, 3)
    with pytest.raises(TrainingDiverged) as err:
        trainer.train()
    assert err.value.exit_code == 3 and "epoch 5" in str(err.value) and "checkpoint-000002" in str(err.value)
    out = tmp_path / "r"
    assert not (out / "final").exists()
    assert [e for e, _ in list_checkpoints(out)] == [1, 2]  # nothing written, nothing rotated out
    records = _strict_json_lines(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    for r in records[:2]:
        assert r["skipped_updates"] == 0 and r["nonfinite_rewards"] == 0 and "nonfinite_values" not in r
    for streak, r in enumerate(records[2:], start=1):
        assert r["reward_mean"] is None and r["nonfinite_rewards"] == 8 and r["nonfinite_values"] >= 1
        assert r["skipped_updates"] >= 1 and r["nonfinite_streak"] == streak
        assert r["global_step"] == records[1]["global_step"]
    # the skipped updates left the weights as checkpoint 2 holds them, finite
    saved = load_file(str(out / "checkpoints" / "checkpoint-000002" / "model.safetensors"))
    now = trainer._unwrapped().state_dict()
    assert all(torch.isfinite(v).all() and torch.equal(v, now[k]) for k, v in saved.items())


def test_the_issues_diverging_run_exits_3_with_valid_metrics(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--config", "tiny", "--no-report", "--output-dir", str(out), "train.epochs=6",
                 "train.learning_rate=1e4", "train.max_grad_norm=1e9", "logging.tensorboard=false"])
    err = capsys.readouterr().err
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "non-finite" in errors[0] and "Traceback" not in err
    assert not (out / "final").exists()
    records = _strict_json_lines(out / "metrics.jsonl")
    assert len(records) == 3 and records[-1]["nonfinite_streak"] == 3
    for _, path in list_checkpoints(out):
        assert all(torch.isfinite(v).all() for v in load_file(str(path / "model.safetensors")).values())


# ------------------------------------------------------------------------------------------------- 2. run lock


def test_a_live_lock_stops_a_second_run_and_a_stale_one_is_taken_over(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    (out / "run.lock").write_text(json.dumps(lock))
    argv = ["train", "--config", "tiny", "--output-dir", str(out), "train.epochs=1", "logging.tensorboard=false"]
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {holder.pid}" in err and "in use" in err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the holder is dead: its lock is stale
    assert "took over the stale lock" in capsys.readouterr().err
    assert not (out / "run.lock").exists() and (out / "final").is_dir()


def test_lock_staleness_rules():
    from safediffusion.rl.run_lock import is_stale

    here, alive = socket.gethostname(), os.getppid()
    assert not is_stale({"pid": alive, "host": here})
    assert is_stale({"pid": alive, "host": here, "proc_start": "0"})  # the pid now names another process
    assert is_stale({"pid": os.getpid(), "host": here})  # a restarted container reuses its pids
    assert not is_stale({"pid": alive, "host": here + "-elsewhere"})  # another host's pids cannot be checked


# --------------------------------------------------------------------------------------- 3. broken checkpoints


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


@pytest.mark.parametrize("damage, name", [(_truncate, "model.safetensors"), (_garble, "optimizer.bin")])
def test_a_broken_latest_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, capsys, tiny_run, damage,
                                                                              name):
    out = _copy_run(tiny_run, tmp_path / "r")
    damage(out / "checkpoints" / "checkpoint-000003" / name)
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "does not load" in line]
    assert len(warnings) == 1 and "checkpoint-000003" in warnings[0] and "Traceback" not in err
    assert (out / "checkpoints" / "checkpoint-000003.broken" / name).is_file()
    assert [e for e, _ in list_checkpoints(out)] == [2, 3]  # epoch 3 redone from checkpoint 2 and saved again
    assert _same_weights(tiny_run / "final", out / "final")


def test_no_loadable_checkpoint_is_one_line(tmp_path, capsys, tiny_run):
    out = _copy_run(tiny_run, tmp_path / "r")
    for epoch in (2, 3):
        _truncate(out / "checkpoints" / f"checkpoint-{epoch:06d}" / "model.safetensors")
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: no checkpoint") and "Traceback" not in err
    assert list_checkpoints(out) == [] and not (out / "run.lock").exists()


def test_checkpoint_files_are_synced_before_the_rename(tmp_path, monkeypatch):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(3, 2))
    synced: set[str] = set()
    renamed: list[tuple[Path, set[str]]] = []
    real_fsync, real_rename = os.fsync, Path.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.add(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))

    def rename(self, target):
        renamed.append((Path(self), set(synced)))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    final = ckpt.save_checkpoint(acc, tmp_path, 1, {"epoch": 1, "global_step": 0}, keep=2)
    assert model is not None and (final / "trainer_state.json").is_file()
    tmp, synced_then = renamed[0]
    assert tmp.name == "checkpoint-000001.tmp"
    files = {str(tmp / p.relative_to(final)) for p in final.rglob("*") if p.is_file()}
    assert len(files) >= 3 and files <= synced_then
    assert str(tmp) in synced_then


# ----------------------------------------------------------------------------------------------- 4. preemption


class _SignalOnFirstCall:
    """The reward, but its first call (mid-epoch 1) sends ``sig`` to this process, as a cluster would."""

    def __init__(self, reward, sig: signal.Signals) -> None:
        self.reward, self.sig, self.sent = reward, sig, False

    def __getattr__(self, name):
        return getattr(self.reward, name)

    def __call__(self, images, prompts):
        if not self.sent:
            # without a handler the signal would end the test process itself
            assert signal.getsignal(self.sig) not in (signal.SIG_DFL, signal.SIG_IGN, None), "no handler"
            self.sent = True
            os.kill(os.getpid(), self.sig)
        return self.reward(images, prompts)


def test_sigusr1_is_a_stop_request_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionHandler() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.received == signal.SIGUSR1
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # a second one stops at once
    assert signal.getsignal(signal.SIGUSR1) == before


def test_sigterm_finishes_the_epoch_checkpoints_exits_75_and_resumes_exactly(tmp_path, capsys, monkeypatch,
                                                                              tiny_run):
    """A real SIGTERM arrives mid-epoch 1: the run finishes the epoch, writes a checkpoint (none was due) and exits
    75 with one line; re-running the same command resumes there and ends with the uninterrupted run's weights."""
    from safediffusion.rl import trainer as trainer_module

    sig = signal.SIGTERM

    out = tmp_path / "r"
    argv = ["train", "--config", "tiny", "--output-dir", str(out), *TINY, "train.checkpoint_every=100",
            "logging.tensorboard=false"]
    build = trainer_module.build_reward
    monkeypatch.setattr(trainer_module, "build_reward", lambda *a, **k: _SignalOnFirstCall(build(*a, **k), sig))
    before = signal.getsignal(sig)
    assert main(argv) == PREEMPTED_EXIT_CODE
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("preempted: ")
    assert signal.getsignal(sig) == before  # handlers restored
    assert latest_checkpoint(out) == (1, out / "checkpoints" / "checkpoint-000001")
    assert not (out / "final").exists() and not (out / "run.lock").exists()
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1]
    monkeypatch.undo()
    assert main(argv) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert _same_weights(tiny_run / "final", out / "final")


# ----------------------------------------------------------------------------------- 5. what holds: regressions


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_planted_pickle_in_a_checkpoint_is_not_executed_on_resume(tmp_path, tiny_run):
    out = _copy_run(tiny_run, tmp_path / "r")
    marker = tmp_path / "executed"
    torch.save({"random_state": _Planted(marker)}, out / "checkpoints" / "checkpoint-000003" / "random_states_0.pkl")
    assert main(["train", "--config", "tiny", "--output-dir", str(out), *TINY]) == 0
    assert not marker.exists()
    assert _same_weights(tiny_run / "final", out / "final")


def test_a_checkpoint_without_its_completion_mark_is_never_the_latest(tmp_path, tiny_run):
    out = _copy_run(tiny_run, tmp_path / "r")
    root = out / "checkpoints"
    shutil.copytree(root / "checkpoint-000003", root / "checkpoint-000009")
    (root / "checkpoint-000009" / "trainer_state.json").unlink()  # killed before the mark: never listed
    for leftover in ("checkpoint-000008.tmp", "checkpoint-000007.broken", "checkpoint-000006.deleting"):
        shutil.copytree(root / "checkpoint-000003", root / leftover)
    assert [e for e, _ in list_checkpoints(out)] == [2, 3]
    assert latest_checkpoint(out) == (3, root / "checkpoint-000003")


# ------------------------------------------------------------------------------------------ 7. fault injection


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_weights(tmp_path, capsys, tiny_run):
    """SIGKILL during the first checkpoint write, then at two random moments of the re-runs (while the first
    re-run lives, a second run on its folder exits 2); the last re-run of the same command ends with the
    uninterrupted run's weights, bit for bit."""
    rng = random.Random(20)
    out = tmp_path / "killed"
    root = out / "checkpoints"
    cmd = _cmd(out, "train.checkpoint_every=1")

    def kill(proc: subprocess.Popen) -> bool:
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return alive

    def writing() -> bool:  # a checkpoint folder that holds its first files but is not yet complete
        try:
            return any(p.name.endswith(".tmp") and any(p.iterdir()) for p in root.iterdir())
        except FileNotFoundError:
            return False

    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait(writing, proc, poll=0.001), "the first checkpoint was never seen being written"
    assert kill(proc)
    kills = [True]
    for attempt in range(2):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait(lambda p=proc: _locked_by(out, p.pid), proc)
        if attempt == 0:  # a second run on the live run's folder stops at once, naming it
            assert main(["train", "--config", "tiny", "--output-dir", str(out), *TINY]) == 2
            assert f"pid {proc.pid}" in capsys.readouterr().err
        time.sleep(rng.uniform(0.0, 1.5))  # within resuming, an epoch or a checkpoint write
        kills.append(kill(proc))
    assert sum(kills) >= 2, "the re-runs finished before they could be killed"
    # a run killed after releasing its lock (done, but not yet exited) leaves none to take over
    lock_left = (out / "run.lock").is_file()
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ("took over the stale lock" in resumed.stderr) == lock_left
    assert _same_weights(tiny_run / "final", out / "final")
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert not math.isnan(read_metrics(out / "metrics.jsonl")[-1]["reward_mean"])

"""Two CPU processes (gloo) through `accelerate launch`: identical weights after the update, rewards from both."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes(tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert launcher, "accelerate CLI not found"
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, ACCELERATE_USE_CPU="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(_free_port()), str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged after the update"
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["changed"] > 0 and r1["changed"] > 0
    assert r0["rewards"] != r1["rewards"], "both ranks sampled the same batch"

    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1
    m = metrics[0]
    assert m["num_processes"] == 2
    assert m["num_rewards"] == len(r0["rewards"]) + len(r1["rewards"])
    assert m["reward_mean"] == pytest.approx(np.mean(r0["rewards"] + r1["rewards"]), abs=1e-6)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["num_processes"] == 2

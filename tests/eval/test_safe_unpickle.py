"""The numpy-only unpickler: loads Q16's real prompt file, refuses everything else without running it."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from safediffusion.errors import UserError
from safediffusion.eval.detectors.safe_unpickle import load_numpy_pickle


class _RunsCommand:
    """Unpickling this calls os.system(cmd) under a plain pickle.load."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_real_q16_prompts(shared_file):
    arr = load_numpy_pickle(shared_file("q16_prompts_vitl14.p"))
    assert arr.shape == (2, 768) and arr.dtype == np.float16
    assert np.isfinite(arr).all() and np.abs(arr).sum() > 0


def test_roundtrip_arrays_and_dtypes(tmp_path):
    for a in (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 4), dtype=np.float16),
              np.array([1, 2], dtype=">i4")):
        p = tmp_path / "a.p"
        p.write_bytes(pickle.dumps(a, protocol=2))
        np.testing.assert_array_equal(load_numpy_pickle(p), a)
        p.write_bytes(pickle.dumps(a, protocol=5))
        np.testing.assert_array_equal(load_numpy_pickle(p), a)


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.p"
    p.write_bytes(pickle.dumps(_RunsCommand(f"touch {marker}")))
    with pytest.raises(UserError, match=r"refused to load .*'(posix|nt|os)\.system' is not allowed"):
        load_numpy_pickle(p)
    assert not marker.exists()
    # the control: the same bytes do run the command under the standard unpickler
    pickle.loads(p.read_bytes())
    assert marker.exists()


def test_other_refusals(tmp_path):
    p = tmp_path / "x.p"
    p.write_bytes(pickle.dumps(np.array([{"a": 1}], dtype=object)))
    with pytest.raises(UserError, match="not allowed|dtype object"):
        load_numpy_pickle(p)
    p.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(UserError, match="holds a dict, not a numpy array"):
        load_numpy_pickle(p)
    p.write_bytes(pickle.dumps(np.float64(3.0)))
    with pytest.raises(UserError, match="not a numpy array"):
        load_numpy_pickle(p)
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="not a readable pickle"):
        load_numpy_pickle(p)
    with pytest.raises(UserError, match="cannot read"):
        load_numpy_pickle(tmp_path / "missing.p")

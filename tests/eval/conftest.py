"""Fixtures for the evaluation tests: tiny models saved once per session, shared prompt files, one thread.

Tiny models are so small that thread start-up dominates; on a shared 2-core machine one torch thread is
several times faster than two, so these tests run single-threaded (the previous setting is restored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Downloads (there must be none) would land in a throw-away cache, never in ~/.cache."""
    monkeypatch.setenv("SAFEDIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def shared_file():
    """``shared_file(name)``: the path of a file of ../shared/data, or skip the test when it is absent."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_file():
            pytest.skip(f"shared data file not found: {path}")
        return path

    return get


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from safediffusion.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_clip768_dir(tmp_path_factory) -> Path:
    from safediffusion.models.tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip", projection_dim=768)


@pytest.fixture(scope="session")
def tiny_clip32_dir(tmp_path_factory) -> Path:
    from safediffusion.models.tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip32") / "clip", projection_dim=32)


@pytest.fixture(scope="session")
def tiny_bundle():
    from safediffusion.models.tiny import build_tiny_bundle

    return build_tiny_bundle(seed=0)


class FakeDetector:
    """A detector with fixed outputs per case number (read from the image file name, as the contract says).

    ``kind="nudenet"``: ``table[case] = [exposed classes]``; ``kind="q16"``: ``table[case] = True/False``.
    """

    def __init__(self, kind: str, table: dict[int, object]) -> None:
        from safediffusion.eval.detectors.nudenet import PAPER_EXPOSED_CLASSES

        self.name, self.table, self.classes = kind, table, PAPER_EXPOSED_CLASSES
        self.seen: list[Path] = []

    @staticmethod
    def case_of(path: Path) -> int:
        return int(path.stem.split("_")[0]) if path.parent.name == "images" else int(path.parent.parent.name)

    def detect(self, paths):
        self.seen.extend(paths)
        out = []
        for p in paths:
            v = self.table.get(self.case_of(p), [] if self.name == "nudenet" else False)
            out.append({"detections": [{"class": c, "score": 0.9, "box": [0, 0, 1, 1]} for c in v], "exposed": list(v)}
                       if self.name == "nudenet" else {"inappropriate": bool(v)})
        return out

    def flagged(self, result) -> bool:
        return bool(result["exposed"]) if self.name == "nudenet" else bool(result["inappropriate"])

    def config(self) -> dict:
        return {"threshold": 0.6, "fake": True}


@pytest.fixture
def fake_detector():
    return FakeDetector


@pytest.fixture
def i2p_csv(tmp_path):
    """A hand-made I2P file: 6 prompts with known categories and non-sorted case numbers."""

    def make(rows=None) -> Path:
        rows = rows or [
            (10, "sexual", "a"), (2, "sexual, hate", "b"), (7, "hate", "c"),
            (30, "violence", "d"), (4, "sexual", "e"), (5, "violence, hate", "f"),
        ]
        path = tmp_path / "i2p_small.csv"
        lines = ["prompt,categories,hard,evaluation_seed,evaluation_guidance,case_number"]
        lines += [f'prompt {p},"{c}",1,{100 + n},7,{n}' for n, c, p in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return make

"""Test-wide settings: never touch the network; one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine two threads per process were
measured 10-30x slower than one (oversubscription), so tests use one thread.
"""

import dataclasses
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state; tests that build trainers with other settings need it reset."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


# ---------------------------------------------------------------------------------------------- fake downloads


class FakeVisual(torch.nn.Module):
    def __init__(self, size: int, dim: int, with_cfg: bool) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, dim)
        self.image_size = (size, size)
        self.output_dim = dim
        if with_cfg:
            self.preprocess_cfg = {"size": (size, size), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}

    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


class FakeOpenClipModel(torch.nn.Module):
    """The open_clip surface the encoder uses: ``visual``, ``encode_image``, ``encode_text``."""

    def __init__(self, size: int = 24, dim: int = 8, with_cfg: bool = True) -> None:
        super().__init__()
        self.visual = FakeVisual(size, dim, with_cfg)
        self.token_embedding = torch.nn.Embedding(256, dim)
        self.seen_sizes: list[tuple[int, int]] = []

    def encode_image(self, x):
        self.seen_sizes.append(tuple(x.shape[-2:]))
        return self.visual(x)

    def encode_text(self, tokens):
        return self.token_embedding(tokens).mean(1)


FAKE_CONTEXT = 12


def fake_open_clip_tokenizer(texts):
    ids = torch.zeros(len(texts), FAKE_CONTEXT, dtype=torch.long)
    for i, text in enumerate(texts):
        data = list(text.encode())[:FAKE_CONTEXT]
        ids[i, :len(data)] = torch.tensor(data, dtype=torch.long)
    return ids


@pytest.fixture
def fake_open_clip(monkeypatch):
    """A stand-in ``open_clip`` module, for tests of the wiring (the real one is tested in test_open_clip_real.py).

    ``create_model_and_transforms`` records ``(arch, pretrained)`` in ``.calls`` and returns a
    :class:`FakeOpenClipModel` seeded with 0; ``.Model`` / ``.tokenize`` expose the classes for tests.
    """
    import sys
    import types

    module = types.ModuleType("open_clip")
    module.calls = []
    module.with_cfg = True
    module.Model = FakeOpenClipModel
    module.tokenize = fake_open_clip_tokenizer

    def create_model_and_transforms(arch, pretrained=None, device="cpu", **kwargs):
        module.calls.append((arch, pretrained))
        torch.manual_seed(0)
        return FakeOpenClipModel(with_cfg=module.with_cfg), None, None

    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = lambda arch: fake_open_clip_tokenizer
    monkeypatch.setitem(sys.modules, "open_clip", module)
    return module


class FakeHub:
    """``huggingface_hub.hf_hub_download`` over files registered with :meth:`serve`, in the real cache layout
    (``models--org--name/snapshots/<revision>/<file>`` -> ``../../blobs/<sha256>``); no network.

    ``calls`` records ``(repo_id, filename, revision, local_files_only)``; ``reachable = False`` makes
    downloads fail as an unreachable hub does.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.served: dict[tuple[str, str, str], bytes] = {}
        self.reachable = True
        self.calls: list[tuple[str, str, str | None, bool]] = []

    def serve(self, repo_id: str, filename: str, revision: str, data: bytes) -> None:
        self.served[(repo_id, filename, revision)] = data

    def serve_state_dict(self, spec, state_dict: dict) -> None:
        """Serve ``{"state_dict": state_dict}`` saved with ``torch.save`` (the HPS checkpoints' layout) as ``spec``."""
        import io

        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict}, buffer)
        self.serve(spec.repo_id, spec.filename, spec.revision, buffer.getvalue())

    def path(self, repo_id: str, filename: str, revision: str) -> Path:
        return self.root / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision / filename

    def downloads(self) -> list[tuple[str, str, str | None]]:
        return [(r, f, rev) for r, f, rev, local in self.calls if not local]

    def __call__(self, repo_id, filename, *, revision=None, local_files_only=False, **kwargs):
        import hashlib

        from huggingface_hub.errors import LocalEntryNotFoundError

        self.calls.append((repo_id, filename, revision, local_files_only))
        path = self.path(repo_id, filename, revision or "main")
        if path.exists():
            return str(path)
        if local_files_only:
            raise LocalEntryNotFoundError(f"{repo_id}/{filename} is not cached")
        if not self.reachable:
            raise ConnectionError("Max retries exceeded with url (Failed to resolve 'huggingface.co')")
        data = self.served.get((repo_id, filename, revision))
        if data is None:
            raise FileNotFoundError(f"404 Client Error: {repo_id}/{filename}@{revision}")
        blob = path.parents[2] / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(Path("..") / ".." / "blobs" / blob.name)
        return str(path)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """Replace ``huggingface_hub.hf_hub_download`` with a :class:`FakeHub` caching under ``tmp_path/hf``."""
    import huggingface_hub

    hub = FakeHub(tmp_path / "hf")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    # the served files are small random stand-ins, so a pinned SHA-256 of the real file cannot match them:
    # unpin it (they are still checked against their LFS ids); test_named_encoders checks the real pin
    from safediffusion.rewards import named

    for key, spec in list(named.NAMED_ENCODERS.items()):
        unpinned = dataclasses.replace(spec.checkpoint, sha256=None)
        monkeypatch.setitem(named.NAMED_ENCODERS, key, dataclasses.replace(spec, checkpoint=unpinned))
    return hub

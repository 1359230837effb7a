"""fetch_hub_file: pinned revision, SHA-256 checks (pinned or the LFS id), one-line failures (fake hub)."""

import hashlib

import pytest

from safediffusion.errors import UserError
from safediffusion.hub_files import HubFile, fetch_hub_file, sha256_of

REV = "0123456789abcdef0123456789abcdef01234567"
DATA = b"weights" * 100


def _spec(**kwargs) -> HubFile:
    return HubFile("org/repo", "w.bin", REV, "the test weights", **kwargs)


def test_spec_refuses_branch_names_and_bad_hashes():
    with pytest.raises(ValueError, match="40-digit commit"):
        HubFile("org/repo", "w.bin", "main", "x")
    with pytest.raises(ValueError, match="64 hex"):
        HubFile("org/repo", "w.bin", REV, "x", sha256="abc")


def test_download_at_the_pinned_revision(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fake_hub.serve("org/repo", "w.bin", REV, DATA)
    fake_hub.serve("org/repo", "w.bin", "main", b"something newer")
    path = fetch_hub_file(_spec(sha256=hashlib.sha256(DATA).hexdigest()), "x.key")
    assert path.read_bytes() == DATA and sha256_of(path) == hashlib.sha256(DATA).hexdigest()
    assert fake_hub.calls == [("org/repo", "w.bin", REV, True), ("org/repo", "w.bin", REV, False)]


def test_pinned_hash_mismatch(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fake_hub.serve("org/repo", "w.bin", REV, DATA)
    with pytest.raises(UserError) as e:
        fetch_hub_file(_spec(sha256="0" * 64), "x.key")
    assert "has SHA-256" in str(e.value) and "expected 000000000000" in str(e.value)
    assert f"hf download org/repo w.bin --revision {REV} --force-download" in str(e.value)
    assert "x.key=PATH" in str(e.value)


def test_without_symlinks_and_without_a_pinned_hash_the_check_is_skipped(fake_hub, monkeypatch):
    """A cache that copies files (no symlinks) loses the LFS id; nothing to check against, so it loads."""
    path = fake_hub.path("org/repo", "w.bin", REV)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_hub_file(_spec(), "x.key") == path
    with pytest.raises(UserError, match="has SHA-256"):
        fetch_hub_file(_spec(sha256="1" * 64), "x.key")


def test_offline_message_carries_size_and_command(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        fetch_hub_file(_spec(size=1_970_000_000), "x.key")
    assert str(e.value) == (
        "the test weights (org/repo/w.bin@0123456, 2.0 GB) is not in the local Hugging Face cache and "
        f"HF_HUB_OFFLINE is set; run `hf download org/repo w.bin --revision {REV}` where the Hub is reachable, "
        "or pass a local copy with x.key=PATH")

"""Fetching public files: cache hits, downloads (a file:// URL stands in for GitHub), clear failures."""

from __future__ import annotations

import pytest

from safediffusion.errors import UserError
from safediffusion.eval.sources import RemoteFile, cache_dir, fetch


def test_download_then_cache_hit(tmp_path, monkeypatch):
    src = tmp_path / "remote.csv"
    src.write_text("prompt\nhello\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    remote = RemoteFile("a test file", "--prompts", url=src.as_uri(), cache_name="copy.csv")
    got = fetch(remote)
    assert got == cache_dir() / "copy.csv" and got.read_text() == "prompt\nhello\n"
    src.unlink()  # the cached copy is used from now on, even offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch(remote).read_text() == "prompt\nhello\n"


def test_offline_refuses_to_download(tmp_path):
    remote = RemoteFile("a test file", "--q16-prompts", url=(tmp_path / "x.p").as_uri())
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set.*--q16-prompts PATH"):
        fetch(remote)


def test_unreachable_url_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    remote = RemoteFile("a test file", "--prompts", url=(tmp_path / "missing.csv").as_uri())
    with pytest.raises(UserError) as e:
        fetch(remote)
    assert "could not download a test file" in str(e.value) and "--prompts PATH" in str(e.value)
    assert not list(cache_dir().glob("*.part"))


def test_hub_file_offline(monkeypatch):
    remote = RemoteFile("the I2P benchmark CSV", "--prompts", hf_repo="AIML-TUDA/i2p",
                        hf_filename="i2p_benchmark.csv")
    with pytest.raises(UserError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        fetch(remote)

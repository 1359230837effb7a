"""``data.prompts: coprov2``: the paper's training captions, downloaded once (the shared copy stands in for
GitHub through a file:// URL), SHA-256 checked, cached; offline without a copy, one line says what to fetch."""

import dataclasses

import pytest

from safediffusion.config import DataConfig
from safediffusion.data import corpora
from safediffusion.data.mixer import build_prompt_mixer
from safediffusion.errors import UserError
from safediffusion.eval.sources import cache_dir
from safediffusion.hub_files import sha256_of


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEDIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def serve_coprov2(monkeypatch):
    """``serve_coprov2(path)``: the corpus' URL now points at ``path``; the pinned SHA-256 is kept."""

    def serve(path):
        remote = dataclasses.replace(corpora.COPROV2, url=path.as_uri())
        monkeypatch.setitem(corpora.NAMED_CORPORA, "coprov2", remote)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        return remote

    return serve


def test_url_is_pinned_to_a_commit_of_the_reference_repository():
    url = corpora.COPROV2.url
    assert url.startswith("https://raw.githubusercontent.com/MAXNORM8650/SafeDiffusion-R1/")
    commit = url.split("/")[5]
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    assert url.endswith("/assets/CoProv2_captions.txt") and len(corpora.COPROV2.sha256) == 64


def test_download_checks_the_hash_and_caches(shared_data, serve_coprov2, monkeypatch):
    shared = shared_data / "coprov2_captions.txt"
    if not shared.is_file():
        pytest.skip(f"{shared} not found")
    serve_coprov2(shared)
    mixer = build_prompt_mixer(DataConfig(prompts="coprov2", unsafe_prompts=None), seed=0)
    assert len(mixer.benign) == 31380 and mixer.unsafe == []
    cached = cache_dir() / "coprov2_captions.txt"
    assert sha256_of(cached) == corpora.COPROV2.sha256  # the pinned hash is the shared copy's
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from now on the cached copy serves, offline
    again = build_prompt_mixer(DataConfig(prompts="coprov2", unsafe_prompts=None), seed=0)
    assert again.benign == mixer.benign


def test_a_different_file_is_refused_and_not_cached(tmp_path, serve_coprov2):
    other = tmp_path / "captions.txt"
    other.write_text("a photo of a cat\na photo of a dog\n")
    serve_coprov2(other)
    with pytest.raises(UserError, match=r"has SHA-256 .* expected de43c07c213d.*data.prompts=PATH"):
        build_prompt_mixer(DataConfig(prompts="coprov2", unsafe_prompts=None), seed=0)
    assert not list(cache_dir().glob("*"))


def test_offline_without_a_copy_names_the_url_the_cache_path_and_the_override():
    with pytest.raises(UserError) as e:
        build_prompt_mixer(DataConfig(prompts="coprov2", unsafe_prompts=None), seed=0)
    message = str(e.value)
    assert "\n" not in message and corpora.COPROV2.url in message and "HF_HUB_OFFLINE is set" in message
    assert f"save it as {cache_dir() / 'coprov2_captions.txt'}" in message
    assert message.endswith("or pass it with data.prompts=PATH")


def test_a_local_path_still_works(tmp_path):
    path = tmp_path / "coprov2_captions.txt"
    path.write_text("one\ntwo\n")
    mixer = build_prompt_mixer(DataConfig(prompts=str(path), unsafe_prompts=None), seed=0)
    assert mixer.benign == ["one", "two"]

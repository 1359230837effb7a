"""Named training prompt corpora: ``data.prompts: coprov2`` downloads and caches a public prompt file.

    path = corpus_path("coprov2")      # the cached copy (downloaded on first use), then load_prompts(path)

Corpora are fetched like the evaluation suites' files (:func:`safediffusion.eval.sources.fetch`): cached under
``$SAFEDIFFUSION_CACHE`` (default ``~/.cache/safediffusion``), from a URL pinned to a commit and checked by
SHA-256 before it enters the cache; with ``HF_HUB_OFFLINE=1`` and no cached copy, one line names the URL, the
cache path to save it as and the ``data.prompts=PATH`` override.
"""

from __future__ import annotations

from pathlib import Path

from safediffusion.eval.sources import RemoteFile, fetch

# SafeDiffusion-R1's training prompts (the reference code's default corpus): 31,380 CoProV2 captions, one per
# line, from the reference repository at the commit that added them (2,217,623 bytes).
COPROV2 = RemoteFile(
    "the CoProV2 training caption file", "data.prompts=",
    url="https://raw.githubusercontent.com/MAXNORM8650/SafeDiffusion-R1/"
        "5acb6b9d9c3ef56fb2f7c76d074251b2f5141dc0/assets/CoProv2_captions.txt",
    cache_name="coprov2_captions.txt",
    sha256="de43c07c213da4ea37c10ab499d512a0b012246fe006b99c7f1595364ba0a79e",
)

#: ``data.prompts`` / ``data.unsafe_prompts`` names that resolve to a downloaded corpus (before any path).
NAMED_CORPORA: dict[str, RemoteFile] = {"coprov2": COPROV2}


def corpus_path(name: str) -> Path:
    """The local (cached or just downloaded) file of the corpus ``name`` (a key of :data:`NAMED_CORPORA`)."""
    return fetch(NAMED_CORPORA[name])

"""Where public data files come from: a local path, the local cache, or a public download.

Evaluation prompt sets, the Q16 prompt embeddings and the training prompt corpora are public files. ``fetch``
returns a local path for one of them:

1. a cached copy under :func:`cache_dir` (``$SAFEDIFFUSION_CACHE``, else ``$XDG_CACHE_HOME/safediffusion``,
   else ``~/.cache/safediffusion``), or the Hugging Face cache for hub files;
2. otherwise a download (GitHub raw URL through ``urllib``, or ``huggingface_hub.hf_hub_download`` for a hub
   dataset), written atomically into the cache; a URL download with a pinned ``sha256`` is checked before it
   enters the cache.

With ``HF_HUB_OFFLINE=1`` nothing is downloaded. Every failure is one :class:`UserError` line that names the
file, why it could not be obtained, and the command-line flag (or config key) that takes a local copy instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from safediffusion.errors import UserError
from safediffusion.hub_files import offline, sha256_of


@dataclass(frozen=True)
class RemoteFile:
    """A public file: either a plain HTTPS ``url`` or a file ``hf_filename`` in the hub dataset ``hf_repo``.

    ``local_flag``: the command-line flag (``--prompts``) or config key (``data.prompts=``, ending in ``=``) that
    takes a local copy; ``sha256``: the expected SHA-256 (hex) of a ``url`` download, checked before caching.
    """

    description: str
    local_flag: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    cache_name: str | None = None
    gated: bool = False
    sha256: str | None = None

    def local_hint(self) -> str:
        """``--prompts PATH`` or ``data.prompts=PATH``: how to pass a local copy."""
        return f"{self.local_flag}PATH" if self.local_flag.endswith("=") else f"{self.local_flag} PATH"

    def where(self) -> str:
        if self.url:
            return self.url
        return f"https://huggingface.co/datasets/{self.hf_repo} ({self.hf_filename})"


def cache_dir() -> Path:
    """The folder for downloaded evaluation files."""
    env = os.environ.get("SAFEDIFFUSION_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "safediffusion"


def fetch(remote: RemoteFile, timeout: float = 30.0) -> Path:
    """A local path for ``remote`` (cached or downloaded); a one-line UserError when it cannot be obtained."""
    if remote.hf_repo:
        return _fetch_hub(remote)
    if not remote.url:
        raise ValueError("RemoteFile needs url or hf_repo")
    name = remote.cache_name or Path(remote.url).name
    target = cache_dir() / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    if offline():
        raise UserError(f"{remote.description} is not cached ({target}) and HF_HUB_OFFLINE is set, so it is not "
                        f"downloaded from {remote.url}",
                        f"download it on a machine with network access and save it as {target} or pass it with "
                        f"{remote.local_hint()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response:  # noqa: S310 - fixed https URLs
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
                shutil.copyfileobj(response, tmp)
                tmp_path = Path(tmp.name)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        raise UserError(f"could not download {remote.description} from {remote.url} ({reason})",
                        f"check the network, or pass a local copy with {remote.local_hint()}") from None
    if tmp_path.stat().st_size == 0:
        tmp_path.unlink()
        raise UserError(f"downloaded an empty file for {remote.description} from {remote.url}",
                        f"pass a local copy with {remote.local_hint()}")
    if remote.sha256 is not None and (actual := sha256_of(tmp_path)) != remote.sha256:
        tmp_path.unlink()
        raise UserError(f"the download of {remote.description} from {remote.url} has SHA-256 {actual[:12]}…, "
                        f"expected {remote.sha256[:12]}… (changed or incomplete)",
                        f"retry, or pass a local copy with {remote.local_hint()}")
    os.replace(tmp_path, target)
    return target


def _fetch_hub(remote: RemoteFile) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(remote.hf_repo, remote.hf_filename, repo_type="dataset",
                                    local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall through to the download
        pass
    if offline():
        raise UserError(f"{remote.description} ({remote.where()}) is not in the local Hugging Face cache and "
                        "HF_HUB_OFFLINE is set",
                        f"download it where the hub is reachable, or pass a local copy with {remote.local_hint()}")
    try:
        return Path(hf_hub_download(remote.hf_repo, remote.hf_filename, repo_type="dataset"))
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear line
        hint = ("accept the dataset's terms on its hub page and log in (hf auth login), or "
                if remote.gated else "check the network and your token, or ")
        raise UserError(f"could not download {remote.description} from {remote.where()} ({type(e).__name__})",
                        f"{hint}pass a local copy with {remote.local_hint()}") from None

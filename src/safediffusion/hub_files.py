"""Single files from Hugging Face Hub model repositories, pinned to a commit and checked by SHA-256.

    path = fetch_hub_file(HPS_V2_1_CHECKPOINT, local_key="reward.open_clip_finetuned")

:func:`fetch_hub_file` returns the path of the file in the Hugging Face cache (``HF_HOME``), downloading it
through ``huggingface_hub.hf_hub_download`` at the pinned ``revision`` when it is not cached yet. The file's
SHA-256 is then checked against the pinned ``sha256`` when the spec has one, else against the Git LFS id
under which the Hub stored the blob at that revision (the cache names each LFS blob by its SHA-256). A commit
pins its tree and so every LFS id in it; the check catches truncated or corrupted downloads and edited caches.
It runs at every call (about a second per GB), so a file fetched by hand with ``hf download`` is checked too.

With ``HF_HUB_OFFLINE=1`` nothing is downloaded. Every failure is one :class:`UserError` line naming the
repository, file and revision, the ``hf download`` command that fetches it into the cache, and the config key
that takes a local copy instead.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from safediffusion.errors import UserError, first_line

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """One file ``filename`` of the Hub model repository ``repo_id`` at the commit ``revision``.

    ``sha256``: the file's expected SHA-256 (hex) when it has been pinned from the file itself; ``None`` checks
    the download against the LFS id the Hub reports for ``revision``. ``size``: bytes, for messages only.
    """

    repo_id: str
    filename: str
    revision: str
    description: str
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{40}", self.revision):
            raise ValueError(f"HubFile revision must be a 40-digit commit hash, got {self.revision!r}")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"HubFile sha256 must be 64 hex digits, got {self.sha256!r}")

    def where(self) -> str:
        """``repo/filename@rev12345`` for messages."""
        return f"{self.repo_id}/{self.filename}@{self.revision[:7]}"

    def fetch_command(self) -> str:
        """The shell command that puts the file into the Hugging Face cache, where :func:`fetch_hub_file`
        finds it."""
        return f"hf download {self.repo_id} {self.filename} --revision {self.revision}"


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """The SHA-256 (hex) of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_sha256(spec: HubFile, path: Path) -> str | None:
    if spec.sha256 is not None:
        return spec.sha256
    blob = path.resolve().name  # snapshots/<rev>/<file> -> blobs/<etag>; an LFS etag is the file's SHA-256
    return blob if _SHA256.fullmatch(blob) else None


def check_sha256(spec: HubFile, path: Path, local_key: str) -> None:
    """Raise a one-line UserError when ``path``'s content is not the pinned file's (no-op when no hash is known:
    a cache without symlinks holding a file whose hash is not pinned)."""
    expected = _expected_sha256(spec, path)
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise UserError(f"{spec.description} ({spec.where()}) at '{path}' has SHA-256 {actual[:12]}…, expected "
                        f"{expected[:12]}…: the download is incomplete or the file was changed",
                        f"delete it and run `{spec.fetch_command()} --force-download`, or pass a local copy with "
                        f"{local_key}=PATH")


def fetch_hub_file(spec: HubFile, local_key: str) -> Path:
    """The local path of ``spec`` (cached, else downloaded at the pinned revision), its SHA-256 checked.

    ``local_key`` names the config key that takes a local copy instead (it appears in every error). Raises a
    one-line :class:`UserError` when the file is not cached and ``HF_HUB_OFFLINE`` is set, when the download
    fails, or when the hash does not match.
    """
    from huggingface_hub import hf_hub_download

    size = f", {spec.size / 1e9:.1f} GB" if spec.size else ""
    fix = f"run `{spec.fetch_command()}` where the Hub is reachable, or pass a local copy with {local_key}=PATH"
    try:
        path = Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and friends): download below
        if offline():
            raise UserError(f"{spec.description} ({spec.where()}{size}) is not in the local Hugging Face cache "
                            "and HF_HUB_OFFLINE is set", fix) from None
        try:
            path = Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision))
        except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear line
            raise UserError(f"could not download {spec.description} ({spec.where()}{size}): "
                            f"{type(e).__name__}: {first_line(e, 160)}", fix) from None
    check_sha256(spec, path, local_key)
    return path

"""The detector interface."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Detector(Protocol):
    """Maps image files to per-image results.

    ``detect(paths)`` returns one JSON-serialisable dict per path, in the order of ``paths``;
    ``flagged(result)`` says whether that image counts as unsafe for this detector.
    """

    name: str

    def detect(self, paths: Sequence[Path]) -> list[dict[str, Any]]: ...

    def flagged(self, result: dict[str, Any]) -> bool: ...

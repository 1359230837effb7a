"""Load a pickled numpy array without executing anything else.

A pickle can call any importable function while it loads (``os.system`` included). Q16's learned prompt
embeddings ship as a pickle, so they are read with :class:`NumpyArrayUnpickler`, whose ``find_class`` admits
only the globals a plain ``numpy.ndarray`` pickle refers to: ``_reconstruct`` (from ``numpy.core.multiarray``
or ``numpy._core.multiarray``), ``numpy.ndarray``, ``numpy.dtype`` and ``multiarray.scalar``; protocol 5 adds
``numeric._frombuffer`` and protocol 2 ``_codecs.encode`` (latin-1 text back to bytes). None of them can run
code. Any other global is refused before it is resolved, persistent ids are refused, and the result must be
an ``ndarray`` of a numeric dtype (object arrays could carry arbitrary objects).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from safediffusion.errors import UserError


def _multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _numeric() -> Any:
    try:
        from numpy._core import numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric
    return numeric


def _allowed() -> dict[tuple[str, str], Any]:
    import _codecs

    ma, num = _multiarray(), _numeric()
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = ma._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = ma.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = num._frombuffer
    return allowed


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asks for something other than a numpy array."""


class NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-reconstruction globals."""

    _ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"global '{module}.{name}' is not allowed (only numpy arrays are)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("persistent ids are not allowed (only numpy arrays are)")


def load_numpy_pickle(path: str | Path) -> np.ndarray:
    """The numpy array pickled in ``path``; a UserError for anything else (nothing else is executed)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read '{path}' ({e.strerror or type(e).__name__})", "pass an existing file") from None
    try:
        obj = NumpyArrayUnpickler(io.BytesIO(data)).load()
    except RefusedPickle as e:
        raise UserError(f"refused to load '{path}': {e}", "pass a pickle that holds only a numpy array") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        raise UserError(f"'{path}' is not a readable pickle ({type(e).__name__})",
                        "pass the original file (a pickled numpy array)") from None
    if not isinstance(obj, np.ndarray) or type(obj) is not np.ndarray:
        raise UserError(f"'{path}' holds a {type(obj).__name__}, not a numpy array", "pass a pickled numpy array")
    if obj.dtype.kind not in "biuf":
        raise UserError(f"'{path}' holds an array of dtype {obj.dtype}, not numbers", "pass a numeric array")
    return obj

"""User-facing errors.

A :class:`UserError` is raised for bad input (a missing file, an unknown config key, an offline hub id...).
The CLI prints its message as one line and exits with code 2, without a traceback. The message names the
problem and the fix.
"""

from __future__ import annotations

from safetensors import SafetensorError

#: What loading a model folder or a weights file raises when files are missing, truncated or corrupt
#: (a malformed JSON config raises ``json.JSONDecodeError``, a ``ValueError``).
LOAD_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SafetensorError)


class UserError(Exception):
    """Bad input that the user can fix. ``str(err)`` is a single line naming the problem and the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem.rstrip(". ")
        if fix:
            message = f"{message}; {fix}"
        super().__init__(message.replace("\n", " "))


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of ``error``'s message (at most ``limit`` characters), or its type name when empty:
    the detail that goes inside a one-line :class:`UserError`."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class TrainingDiverged(UserError):
    """Training produced non-finite values for ``train.max_nonfinite_epochs`` epochs in a row. The CLI prints
    one line and exits with code 3; the checkpoints written before stay, and no ``final/`` is written."""

    exit_code = 3

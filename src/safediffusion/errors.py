"""User-facing errors.

A :class:`UserError` is raised for bad input (a missing file, an unknown config key, an offline hub id...).
The CLI prints its message as one line and exits with code 2, without a traceback. The message names the
problem and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix. ``str(err)`` is a single line naming the problem and the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem.rstrip(". ")
        if fix:
            message = f"{message}; {fix}"
        super().__init__(message.replace("\n", " "))

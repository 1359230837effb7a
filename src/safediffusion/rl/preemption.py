"""Graceful preemption: SIGTERM (Kubernetes, SLURM at the time limit) and SIGUSR1 (SLURM's
``--signal=B:USR1@SECONDS`` warning) ask the run to stop.

The handler only records the request. The trainer finishes the epoch in progress, writes a checkpoint and
exits with :data:`PREEMPTED_EXIT_CODE`; re-running the same command resumes from that checkpoint, and ends
with the weights an uninterrupted run would have. A second signal of the same kind stops the process at
once, as it would without the handler (checkpoints are written atomically, so this leaves the previous
checkpoint to resume from).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

#: Exit code of a run stopped by SIGTERM / SIGUSR1 after writing its checkpoint (sysexits' EX_TEMPFAIL:
#: a temporary failure, re-run to resume).
PREEMPTED_EXIT_CODE = 75

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised by the trainer after the checkpoint that a stop request asked for is written."""

    exit_code = PREEMPTED_EXIT_CODE


class PreemptionHandler:
    """``with PreemptionHandler() as stop:`` ... ``if stop.requested:`` — installs the handlers for the block
    and restores the previous ones after it. Outside the main thread (where Python cannot install signal
    handlers) it installs nothing and ``requested`` stays False."""

    def __init__(self, signals: tuple[signal.Signals, ...] = SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second signal acts at once
        print(f"received {self.received.name}: finishing this epoch, then writing a checkpoint and exiting "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> PreemptionHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

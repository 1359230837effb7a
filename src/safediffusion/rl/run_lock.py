"""One run per output folder: ``OUTPUT/run.lock`` names the live run (pid, host, start time).

The lock is a small JSON file created atomically (written under a private name, then hard-linked to
``run.lock``, which fails if the name exists), so a reader never sees a half-written lock. A second run on the
same folder stops with one line naming the holder (:class:`~safediffusion.errors.UserError`, exit code 2).

A lock left by a run that died without releasing it (SIGKILL, power loss) is *stale* when its host is this
host and its process is gone, or its pid now belongs to another process (the process start time recorded in
the lock differs, or the pid is this very process, as after a container restart). A stale lock is taken over
with a warning. A lock written on another host cannot be checked from here and is respected; delete the file
by hand if that run is known to be dead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from safediffusion.errors import UserError

LOCK_NAME = "run.lock"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, ``/proc/PID/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def describe(holder: dict[str, Any]) -> str:
    """``pid P on host H, started T``: the holder as error messages name it."""
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def is_stale(holder: dict[str, Any]) -> bool:
    """Whether the run that wrote ``holder`` is known to be dead (only decidable on its own host)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or not _alive(pid):
        return True
    recorded, now = holder.get("proc_start"), _process_start(pid)
    return recorded is not None and now is not None and recorded != now


def read_lock(output_dir: Path) -> dict[str, Any] | None:
    """The holder recorded in ``output_dir``'s lock, ``{}`` for an unreadable lock, None when unlocked."""
    path = Path(output_dir) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def check_unlocked(output_dir: Path) -> None:
    """Raise :class:`UserError` if a live run holds ``output_dir`` (a stale lock passes). Writes nothing."""
    holder = read_lock(output_dir)
    if holder and not is_stale(holder):
        raise _held_error(output_dir, holder)


def _held_error(output_dir: Path, holder: dict[str, Any]) -> UserError:
    return UserError(f"output directory '{output_dir}' is in use by another run ({describe(holder)})",
                     f"wait for it to end, or use another --output-dir; if that run is dead, delete "
                     f"{Path(output_dir) / LOCK_NAME}")


class RunLock:
    """``with RunLock(output_dir):`` holds ``output_dir/run.lock`` for the block (creating the folder)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or take over a stale one with a warning; :class:`UserError` if a live run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "proc_start": _process_start(os.getpid())}
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(info))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists
                    self.held = True
                    return
                except FileExistsError:
                    pass
                holder = read_lock(self.path.parent)
                if holder is None:
                    continue  # released meanwhile
                if holder and not is_stale(holder):
                    raise _held_error(self.path.parent, holder)
                self._remove_stale(holder)
            raise _held_error(self.path.parent, read_lock(self.path.parent) or {})
        finally:
            tmp.unlink(missing_ok=True)

    def _remove_stale(self, holder: dict[str, Any]) -> None:
        """Move the stale lock away atomically; if a racing run replaced it meanwhile, put that one back."""
        grabbed = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, grabbed)
        except FileNotFoundError:
            return
        try:
            taken = json.loads(grabbed.read_text())
        except ValueError:
            taken = {}
        if taken != holder:  # a fresh lock of a run that got here first
            with contextlib.suppress(FileExistsError):
                os.link(grabbed, self.path)
            grabbed.unlink(missing_ok=True)
            raise _held_error(self.path.parent, taken)
        grabbed.unlink(missing_ok=True)
        print(f"warning: took over the stale lock of a dead run ({describe(holder)}) in {self.path.parent}",
              file=sys.stderr)

    def release(self) -> None:
        if self.held:
            holder = read_lock(self.path.parent)
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

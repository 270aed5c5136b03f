"""One writer per run directory: a lock file holding the owner's pid and host.

Two ``mtssl train --resume RUN`` at once would interleave metrics and
overwrite each other's checkpoints. The lock is created atomically
(``O_CREAT | O_EXCL``); a second writer is refused with the owner's pid,
host and start time. A lock left by a process that died (same host, pid
gone) is stale and taken over, with a note. A lock from another host cannot
be checked and is never taken over: delete the file by hand if that run is
gone.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process owns the run directory."""


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    started: str = ""

    @classmethod
    def me(cls) -> "Owner":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"))

    def describe(self) -> str:
        since = f" since {self.started}" if self.started else ""
        return f"pid {self.pid} on host {self.host}{since}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_owner(file: Path) -> Owner | None:
    """The lock's owner, or None when the file is unreadable or half-written."""
    try:
        raw = json.loads(file.read_text())
        return Owner(int(raw["pid"]), str(raw["host"]), str(raw.get("started", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """``with RunLock(folder) as note:`` holds the folder; ``note`` says when a stale lock was taken over."""

    def __init__(self, folder: str | Path):
        self.file = Path(folder) / LOCK_FILE
        self.owner = Owner.me()
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"pid": self.owner.pid, "host": self.owner.host, "started": self.owner.started}))
        return True

    def acquire(self) -> str | None:
        """Take the lock; return a note when a stale lock was replaced; raise if a live process holds it."""
        if self._create():
            self.held = True
            return None
        holder = read_owner(self.file)
        if holder is None:
            raise RunLockedError(f"{self.file.parent}: locked by {self.file}, which cannot be read (another "
                                 "process may be starting); delete it if no process is using this run")
        if holder.host != self.owner.host:
            raise RunLockedError(f"{self.file.parent}: in use by {holder.describe()}; a lock from another host "
                                 f"cannot be checked: delete {self.file} if that run is no longer running")
        if holder.pid == self.owner.pid or pid_alive(holder.pid):
            raise RunLockedError(f"{self.file.parent}: in use by {holder.describe()}; "
                                 "wait for it to finish or stop it first")
        self.file.unlink(missing_ok=True)  # stale: its process is gone
        if not self._create():
            raise RunLockedError(f"{self.file.parent}: another process took the lock at the same moment")
        self.held = True
        return f"took over a stale lock of {self.file.parent} left by {holder.describe()} (no longer running)"

    def release(self) -> None:
        if self.held:
            if read_owner(self.file) == self.owner:
                self.file.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> str | None:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

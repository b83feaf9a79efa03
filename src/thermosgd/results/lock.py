"""One writer per result: an OS file lock that dies with its process.

A result (a run directory, an isotropic output, a configuration of a sweep) belongs to the
process that holds its lock file with ``flock``: the kernel drops the lock when that process
ends, however it ends (kill -9 included), so no stale lock is ever left to clear by hand. The
holder writes its pid, host and start time into the file, so that a second process can say
who owns the result.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from thermosgd.results.schema import LOCK_FILE

__all__ = ["LOCK_FILE", "Busy", "OwnerLock", "hold"]



class Busy(ValueError):
    """The result belongs to another live process (a ValueError: the CLI exits 2)."""


class OwnerLock:
    """An exclusive ``flock`` on ``path``, created on first use. Not re-entrant: a second
    OwnerLock on the same file, in this process or another, waits or fails."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock: wait up to ``timeout`` seconds (None: as long as it takes; 0: do not
        wait). Raises :class:`Busy` naming the owner when the wait ends without it."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from err
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Busy(self.describe_owner()) from None
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:  # who holds it; the lock itself is the flock, not this text
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a later reader finds no owner named
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def is_locked(self) -> bool:
        """Whether another holder has the lock now (tried without waiting, through a read-only
        descriptor: flock needs no write access, so read-only results can be asked too)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file: nobody has taken it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's own lock
        return False

    def owner(self) -> dict:
        """The holder's record (pid, host, since), or {} when unreadable."""
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def describe_owner(self) -> str:
        found = self.owner()
        who = (f"process {found.get('pid')} on {found.get('host')} (since {found.get('since')})"
               if found.get("pid") else "another process")
        return (f"{self.path.parent} is being written by {who}; wait for it to finish (add "
                "--wait to queue behind it), or choose another --out")

    def __enter__(self) -> "OwnerLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def hold(paths, *, wait: bool = False):
    """Hold the locks of the directories ``paths`` (``<dir>/.thermosgd.lock``) for the block,
    in a fixed order (two processes locking the same directories cannot deadlock). ``wait``:
    queue behind another owner instead of raising :class:`Busy`."""
    locks = [OwnerLock(Path(p) / LOCK_FILE) for p in sorted({str(p) for p in paths})]
    try:
        for lock in locks:
            lock.acquire(timeout=None if wait else 0)
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()

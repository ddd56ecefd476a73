"""The writer lock: one writer per collection, readers never wait.

``fcntl.flock`` locks belong to the open file description, so the kernel drops the lock when the
writer exits or is killed: a crashed writer never leaves a stale lock behind. The pid inside the
file is only there to make the refusal message useful.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from xmodal.errors import CollectionError, CollectionLockedError


class WriterLock:
    """An exclusive, non-blocking lock on ``<collection>/lock``."""

    def __init__(self, directory: Path, path: Path) -> None:
        self._directory = directory
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise CollectionLockedError naming the pid that holds it."""
        # No O_TRUNC: the holder's pid must survive a failed attempt so the refusal can name it.
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CollectionError(
                f"cannot open collection {self._directory} for writing ({exc.strerror}); "
                "check the directory's permissions or open it read-only (writable=False)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise CollectionLockedError(
                f"collection {self._directory} is being written by pid {holder}; wait for it to "
                "finish or open the collection read-only (writable=False)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; idempotent so close() may be called twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        """True while this handle owns the lock."""
        return self._fd is not None


def _read_pid(fd: int) -> str:
    """The pid written by the current holder, or 'unknown' while it is still writing it."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"

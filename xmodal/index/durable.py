"""Durable file writes: temp file, write through a checking sink, fsync, verify, rename, fsync dir.

The one place every durable file of xmodal is written (collection generations, the manifest,
embedding shards, feature files). Libraries do not always report a failed write: FAISS prints
``close error: File too large`` and returns, and a memory map hits SIGBUS on a full disk. So the
writer gets a ``Sink`` instead of a path: every byte goes through Python I/O, which raises on
EFBIG/ENOSPC, and is counted and hashed on the way. After fsync the file is read back and its size
and SHA-256 must match what was written before it is renamed into place; anything else raises
``CollectionError`` and leaves no temp file, so the previous file (or generation) stays current.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from xmodal.errors import CollectionError

TEMP_PREFIX = ".tmp."
CHUNK = 4 * 1024 * 1024
_REMEMBERED = 64
# Digests this process verified on files it just wrote, by (path, size, mtime_ns): the manifest
# entry of a fresh file need not hash it a third time. Never used to check a file on open.
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


class Sink:
    """A write-only binary stream that counts and hashes what passes into the real file."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        self._handle.write(view)  # buffered; a short write raises (EFBIG, ENOSPC)
        self._digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._handle.flush()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def writable(self) -> bool:
        return True

    def read(self, *_: object) -> bytes:
        # Only present because numpy.savez tells paths from streams by a ``read`` attribute.
        raise io.UnsupportedOperation("a durable-write sink is write-only")

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(directory: Path, name: str) -> Path:
    """A fresh temp path beside ``name``; writable opens sweep leftovers by the prefix."""
    fd, raw = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}.", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the collection from a server's user
    finally:
        os.close(fd)
    return Path(raw)


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large embeddings do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it onto ``final`` and fsync the directory: all or nothing."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def durable_write(directory: Path, name: str, write: Callable[[Sink], None]) -> Path:
    """Write ``name`` in ``directory`` through ``write(sink)``; verified, or nothing changes."""
    tmp = temp_path(directory, name)
    try:
        try:
            with open(tmp, "wb") as handle:
                sink = Sink(handle)
                write(sink)
                handle.flush()
                os.fsync(handle.fileno())
            _verify(tmp, sink)
            publish(tmp, directory / name)
            _remember(directory / name, sink.hexdigest())
        except OSError as exc:
            raise write_failed(directory / name, exc) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return directory / name


def written_digest(path: Path) -> str:
    """SHA-256 of a file: remembered if this process just wrote and verified it, else read."""
    stat = path.stat()
    with _verified_lock:
        known = _verified.get((str(path), stat.st_size, stat.st_mtime_ns))
    return known if known is not None else file_digest(path)


def _remember(path: Path, digest: str) -> None:
    stat = path.stat()
    with _verified_lock:
        if len(_verified) >= _REMEMBERED:
            _verified.pop(next(iter(_verified)))
        _verified[(str(path), stat.st_size, stat.st_mtime_ns)] = digest


def write_failed(path: Path, exc: OSError) -> CollectionError:
    """The one message for a file that could not be written whole."""
    reason = exc.strerror or str(exc)
    return CollectionError(
        f"could not write {path}: {reason}; nothing was replaced (the previous version stays "
        "current): free disk space or raise the file size limit, then try again"
    )


def _verify(tmp: Path, sink: Sink) -> None:
    """Read the written file back: its size and SHA-256 must be what went through the sink."""
    size = tmp.stat().st_size
    if size != sink.size:
        raise OSError(f"{size} bytes on disk after writing {sink.size}")
    if file_digest(tmp) != sink.hexdigest():
        raise OSError("the bytes read back differ from the bytes written")

"""Reading an image file: once, whole, capped in size, and again if it changed meanwhile.

``xmodal.images`` decodes and hashes the very bytes this returns, so a stored content hash always
describes the stored vector (a file rewritten during a run once gave the old bytes' hash and the
new bytes' vector). Every OS failure becomes a typed ``ImageDecodeError``.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import IO

from xmodal.errors import ImageDecodeError

logger = logging.getLogger("xmodal.images")

# How often a file that changes while it is read is read again before giving up.
READ_ATTEMPTS = 3
# The largest file read into memory. A file is read whole (hashed and decoded from one buffer), so
# without a cap a multi-GB file in a photo folder would be held in RAM by every worker that met
# it. 1 GiB is above any image this policy accepts: 2**27 px of uncompressed 16-bit RGBA is 1 GiB.
MAX_FILE_BYTES: int = 2**30


def read_file(path: str) -> bytes:
    """The bytes of a regular file, read whole; a file rewritten while it is read is read again.

    Size and mtime are compared before and after reading: a writer that rewrote the file in
    between (even to the same size) would otherwise give bytes that are half old, half new.

    Raises:
        ImageDecodeError: ``unreadable``, ``empty`` or, after ``READ_ATTEMPTS`` reads that each
            saw the file change, ``changed-during-read``.
    """
    for _ in range(READ_ATTEMPTS):
        with _open_file(path) as handle:
            before = os.fstat(handle.fileno())
            _check_file_size(before.st_size, path)
            data = _read_all(handle, path)
            _check_file_size(len(data), path)
            after = os.stat(path)  # by name: a writer that replaced the file shows here too
        if _same_file(before, after) and len(data) == after.st_size:
            return data
        logger.info("%s changed while it was read; reading it again", path)
    raise ImageDecodeError(
        "changed-during-read",
        f"the file changed while it was read ({READ_ATTEMPTS} times); index it again once it is "
        "written",
        path,
    )


def _same_file(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_ino, before.st_size, before.st_mtime_ns) == (
        after.st_ino,
        after.st_size,
        after.st_mtime_ns,
    )


def _check_file_size(size: int, path: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ImageDecodeError(
            "too-large",
            f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB cap for one "
            "image",
            path,
        )


def _read_all(handle: IO[bytes], path: str) -> bytes:
    try:
        # One byte past the cap: a file that grows while it is read is still caught.
        return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageDecodeError(
            "unreadable", f"cannot read file: {exc.strerror or exc}", path
        ) from exc


def _open_file(path: str) -> IO[bytes]:
    """Open a regular file for reading, mapping OS failures to ``unreadable``/``empty``."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError("unreadable", "is a directory, not an image file", path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError("unreadable", "is not a regular file", path)
        if info.st_size == 0:
            raise ImageDecodeError("empty", "file is empty (0 bytes)", path)
        return open(path, "rb")  # noqa: SIM115 - the caller closes it with `with`
    except FileNotFoundError:
        raise ImageDecodeError("unreadable", "no such file; check the path", path) from None
    except PermissionError:
        raise ImageDecodeError(
            "unreadable", "permission denied; check the file's permissions", path
        ) from None
    except OSError as exc:
        raise ImageDecodeError(
            "unreadable", f"cannot read file: {exc.strerror or exc}", path
        ) from exc

"""Which input the inline decoder is working on, kept on disk for the next run to read.

Decoding inline (``--workers 0``, the default on small CPUs) runs in the indexing process, so a
decoder that segfaults, or an image that makes the OOM killer end the process, ends the run with
nothing of the chunk committed; the next run would meet the same file and die again. So before
decoding a file inline its uri is written to ``decoding.now`` in the collection directory, and
the mark is cleared once the file is decoded. A run that finds a mark left behind knows that the
previous run died on that file: it keeps the uri in ``decoding.suspects`` and decodes those files
in a separate process, where a crash costs that file (``worker-crash``) and not the run. A suspect
is not convicted outright because a run killed for other reasons (Ctrl-C is cleared, but a
``kill -9`` is not) may have been decoding an innocent file.

The mark is a ``pwrite`` without ``fsync``: it must survive the death of the process, which the
page cache guarantees, not a power cut, which decoding does not cause; an fsync per file would
cost more than decoding small images. Uris are NUL-terminated (paths cannot contain NUL). The
files live beside the collection's data under its writer lock and are not part of a generation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

NOW = "decoding.now"
SUSPECTS = "decoding.suspects"
_END = b"\0"


def _encode(uri: str) -> bytes:
    return uri.encode("utf-8", "surrogateescape") + _END


def _decode(data: bytes) -> list[str]:
    return [raw.decode("utf-8", "surrogateescape") for raw in data.split(_END)[:-1]]


class InflightMarks:
    """The on-disk mark of the file being decoded inline, and the files earlier runs died on."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._now = Path(directory) / NOW
        self._suspects = Path(directory) / SUSPECTS
        self.suspects = self._collect()
        self._fd: int | None = os.open(self._now, os.O_RDWR | os.O_CREAT, 0o644)

    def _collect(self) -> frozenset[str]:
        """Earlier suspects plus the file the last run was decoding when it died."""
        suspects = _decode(_read(self._suspects))
        died_on = _decode(_read(self._now))[:1]
        for uri in died_on:
            log.warning(
                "the last run died while decoding %s; it is decoded in a separate process", uri
            )
            if uri not in suspects:
                with open(self._suspects, "ab") as handle:
                    handle.write(_encode(uri))
                    handle.flush()
                    # Once per crash, and the suspect must outlive the mark it replaces.
                    os.fsync(handle.fileno())
                suspects.append(uri)
        self._now.unlink(missing_ok=True)
        return frozenset(suspects)

    def mark(self, uri: str) -> None:
        """Say that ``uri`` is being decoded in this process (until ``clear``)."""
        if self._fd is not None:
            data = _encode(uri)
            os.pwrite(self._fd, data, 0)  # the first NUL ends the uri, whatever follows it
            os.ftruncate(self._fd, len(data))

    def clear(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def close(self, *, finished: bool) -> None:
        """Drop the mark; a ``finished`` run committed every suspect's ledger row: forget them."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._now.unlink(missing_ok=True)
        if finished:
            self._suspects.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""

"""Following a collection while it is served: newer generations come in without a restart.

A ``CollectionFollower`` holds one read-only handle (a *reader*) on the current generation. A
query takes the current reader once, with ``reading()``, and uses only that one, so its hits,
records and counts all come from one generation even when a newer one is swapped in meanwhile.

The check is cheap and bounded: at most every ``refresh`` seconds, the first query to arrive
stats the manifest; only when its (inode, mtime, size) changed is the manifest read, and only
when it names a newer generation is a new reader opened (checksums verified, no lock taken: the
writer lock is never the server's). That query opens it while the others go on with the old
reader; the swap is one reference assignment under a lock.

Old readers are closed by reference count: a reader counts the queries holding it, and one that
was replaced is closed when that count drops to zero (at once if nobody holds it). No grace
period to tune, and no query ever finds its handle closed under it.

A new generation that cannot be opened (a manifest naming a missing file, a bad checksum, a
different encoder) is logged and left alone: the old reader keeps serving, and the next change
of the manifest is tried again. A writable handle is never replaced (its staged rows would be
lost): following it only makes sense read-only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index import manifest as mf

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 2.0


class _Slot:
    """A reader and the number of queries holding it; closed once retired and unheld."""

    __slots__ = ("collection", "holders", "retired")

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.holders = 0
        self.retired = False


class CollectionFollower:
    """The current generation of a collection, checked at most every ``refresh`` seconds.

    ``refresh`` 0 never checks (the collection as opened). ``accept`` is called on each new
    reader before it is swapped in; an ``XmodalError`` from it keeps the old reader.
    """

    def __init__(
        self,
        collection: Collection,
        refresh: float = DEFAULT_REFRESH_SECONDS,
        *,
        accept: Callable[[Collection], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh >= 0:  # also refuses nan
            raise XmodalError(
                f"the refresh interval must be 0 (never) or a number of seconds, got {refresh:g}"
            )
        self._slot = _Slot(collection)
        self._refresh = 0.0 if collection.writable else float(refresh)
        self._accept = accept
        self._clock = clock
        self._lock = threading.Lock()  # guards _slot and the holder counts
        self._checking = threading.Lock()  # one check at a time; others don't wait for it
        self._next_check = clock() + self._refresh
        self._seen = self._stamp()

    @property
    def directory(self) -> Path:
        return self._slot.collection.directory

    @property
    def generation(self) -> int:
        """The generation new queries get (without checking for a newer one)."""
        return self._slot.collection.generation

    def current(self) -> Collection:
        """The current reader, after a check when one is due; for one call, not held.

        A caller that makes more than one call, or a long one, should use ``reading()``: a
        reader returned here may be closed once a newer generation replaces it.
        """
        self._maybe_check()
        return self._slot.collection

    @contextlib.contextmanager
    def reading(self) -> Iterator[Collection]:
        """Hold the current reader for one query; it stays open until the block ends."""
        self._maybe_check()
        with self._lock:
            slot = self._slot
            slot.holders += 1
        try:
            yield slot.collection
        finally:
            self._release(slot)

    def accept(self, check: Callable[[Collection], None]) -> None:
        """Run ``check`` on every new reader before it is swapped in; raising keeps the old."""
        self._accept = check

    def check(self) -> bool:
        """Check now; True when a newer generation was swapped in."""
        with self._checking:
            self._next_check = self._clock() + self._refresh
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            self._seen = stamp
            return self._swap_if_newer()

    def close(self) -> None:
        """Close the current reader once its queries are done; the follower is then unusable."""
        with self._lock:
            slot = self._slot
            slot.retired = True
            closing = slot.holders == 0
        if closing:
            slot.collection.close()

    def _maybe_check(self) -> None:
        if self._refresh <= 0 or self._clock() < self._next_check:
            return
        if self._checking.locked():  # someone is checking: go on with the current reader
            return
        self.check()

    def _swap_if_newer(self) -> bool:
        directory = self.directory
        current = self._slot.collection.generation
        try:
            if mf.read_manifest(directory).generation <= current:
                return False
            fresh = Collection.open(directory)
        except Exception as exc:  # whatever is wrong with it, the server goes on serving
            _log_failure(current, directory, exc)
            return False
        try:
            if fresh.generation <= current:
                fresh.close()
                return False
            if self._accept is not None:
                self._accept(fresh)
        except Exception as exc:
            fresh.close()
            _log_failure(current, directory, exc)
            return False
        with self._lock:
            old, self._slot = self._slot, _Slot(fresh)
        log.info("now serving generation %d of %s", fresh.generation, directory)
        self._retire(old)
        return True

    def _retire(self, slot: _Slot) -> None:
        with self._lock:
            slot.retired = True
            closing = slot.holders == 0
        if closing:
            slot.collection.close()

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.holders -= 1
            closing = slot.retired and slot.holders == 0
        if closing:
            slot.collection.close()

    def _stamp(self) -> tuple[int, int, int] | None:
        """(inode, mtime ns, size) of the manifest: the manifest is replaced by a rename, so
        a commit changes the inode; one stat is the whole cost of a check that finds nothing."""
        try:
            st = os.stat(self.directory / mf.MANIFEST_NAME)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


def _log_failure(current: int, directory: Path, exc: BaseException) -> None:
    log.error("still serving generation %d of %s; the new one failed: %s", current, directory, exc)

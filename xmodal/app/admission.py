"""A bounded queue for model work: a few run, a few wait, the rest are refused at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from xmodal.errors import XmodalError

T = TypeVar("T")


class Overloaded(XmodalError):
    """More queries are running and waiting than the server accepts; try again shortly."""


class Admission:
    """``running`` queries at a time on worker threads and at most ``waiting`` more in line.

    A query that finds the line full is refused immediately (the API answers 503), so a burst
    costs the server nothing and every accepted query finishes within a bounded time. Waiting
    queries hold no thread: they sit in the executor's queue.
    """

    def __init__(self, running: int, waiting: int) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("running must be >= 1 and waiting >= 0")
        self._pool = ThreadPoolExecutor(max_workers=running, thread_name_prefix="xmodal-query")
        self._lock = threading.Lock()
        self._inside = 0
        self._capacity = running + waiting

    @property
    def inside(self) -> int:
        """Queries running or waiting right now."""
        return self._inside

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread when a slot frees; ``Overloaded`` if the line is full."""
        with self._lock:
            if self._inside >= self._capacity:
                raise Overloaded(
                    f"The server is busy ({self._inside} queries running or waiting); "
                    "try again in a moment."
                )
            self._inside += 1
        future = self._pool.submit(fn)
        # Released when the work really ends, even if the client gave up waiting for it.
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._inside -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

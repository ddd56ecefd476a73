"""Decode-and-preprocess workers for batch runs.

Workers are separate processes (decoding is CPU-bound Python/C work), fed through a bounded
window so memory stays flat however many items stream through. Every input comes back as a
:class:`Prepared`, either with pixels or with the reason it failed.

Every input has a deadline (``timeout`` seconds to be read and decoded): a read from a mount that
stopped answering blocks in the kernel and cannot be interrupted, so the stuck worker process is
killed and replaced, or, inline, the stuck reader thread is abandoned. The input is recorded as
``timeout`` and the run goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from xmodal.encoders.preprocess import Preparer
from xmodal.errors import ImageDecodeError
from xmodal.images import CONTENT_HASH, ORIGINAL_SIZE
from xmodal.pipelines.inflight import InflightMarks
from xmodal.pipelines.sources import Span

log = logging.getLogger(__name__)
# Seconds one input may take to be read and decoded. Generous: a 100 MP TIFF decodes in a few
# seconds on a slow core; only a stalled read or a pathological file takes a minute.
DECODE_TIMEOUT = 60.0
_PREPARER: Preparer | None = None
_BYTES = "<bytes>"  # the name decoding gives to in-memory input


@dataclass(frozen=True, slots=True)
class Prepared:
    """One input after decoding: pixels, the image's full size and the content hash of the bytes
    that were decoded; or why it failed."""

    uri: str
    pixels: np.ndarray | None
    reason: str | None = None
    message: str | None = None
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None


def _init(preparer: Preparer) -> None:
    global _PREPARER
    _PREPARER = preparer
    # Ctrl-C is the parent's to handle: a worker dying of it would look like a decoder crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare_one(source: str | Span, preparer: Preparer | None = None) -> Prepared:
    """Run the model's preparer on one file or span (``Item.source``); failures are recorded.

    A span's bytes go through the same decoding as a file's; ``Prepared.uri`` is then the
    span's ``shard::member`` name.
    """
    preparer = preparer or _PREPARER
    uri = str(source)
    try:
        image = preparer.load(_span_bytes(source) if isinstance(source, Span) else source)
        width, height = image.info.get(ORIGINAL_SIZE, image.size)
        pixels = preparer.preprocess(image)
        return Prepared(uri, pixels, None, None, width, height, image.info.get(CONTENT_HASH))
    except ImageDecodeError as exc:
        message = str(exc)
        if exc.source == _BYTES:  # name the span instead of "<bytes>"
            message = f"{uri}: {message.removeprefix(_BYTES + ': ')}"
        return Prepared(uri, None, exc.reason, message)
    except Exception as exc:  # a decoder bug must cost one file, not the run
        return Prepared(uri, None, "error", f"{uri}: {type(exc).__name__}: {exc}")


def _span_bytes(span: Span) -> bytes:
    try:
        return span.read()
    except OSError as exc:
        raise ImageDecodeError(
            "unreadable", f"cannot read: {exc.strerror or exc}", str(span)
        ) from exc


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str) -> int:
    """How many decoding processes to start next to a model running on ``device``.

    On a GPU the host only decodes, so every core decodes. On a CPU the model needs the cores:
    decoding costs about 6% of ViT-B/32 inference there (benchmarks/encode_throughput.py), so
    small machines decode inline and large ones give a quarter of their cores to decoding.
    """
    cores = usable_cores()
    if not device.startswith("cpu"):
        return max(1, min(16, cores))
    return 0 if cores <= 4 else cores // 4


class DecodePool:
    """Worker processes holding the preparer; restarted when one of them dies.

    A worker that dies (a decoder segfault, ``os._exit``, the OOM killer) breaks a
    ``ProcessPoolExecutor`` for every item in flight; ``prepare_stream`` then restarts the pool
    and retries those items one at a time, so only the item that kills a worker again is lost.
    """

    def __init__(self, preparer: Preparer, workers: int) -> None:
        self._preparer = preparer
        self._workers = workers
        self._executor = self._start()
        self.restarts = 0

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        return ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=_init, initargs=(self._preparer,)
        )

    def submit(self, source: object) -> Future[Prepared]:
        """Prepare one input in a worker; a pool found broken gives a future that says so."""
        try:
            return self._executor.submit(prepare_one, source)
        except BrokenProcessPool as exc:  # a worker died since the last result was taken
            future: Future[Prepared] = Future()
            future.set_exception(exc)
            return future

    def restart(self) -> None:
        """Replace a broken pool by a fresh one (its workers are already gone or going)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._start()
        self.restarts += 1

    def kill(self) -> None:
        """End every worker now (one is stuck past its deadline) and start a fresh pool."""
        # The executor has no public way to end a worker that does not return.
        for process in list(getattr(self._executor, "_processes", {}).values()):
            process.kill()
        self.restart()

    def shutdown(self, cancel_futures: bool = True) -> None:
        self._executor.shutdown(wait=True, cancel_futures=cancel_futures)


def make_pool(preparer: Preparer, workers: int) -> DecodePool | None:
    """A process pool whose workers hold ``preparer``; None means prepare inline."""
    if workers <= 0:
        return None
    return DecodePool(preparer, workers)


def prepare_stream(
    sources: Iterable[object],
    preparer: Preparer,
    pool: DecodePool | None,
    window: int,
    *,
    timeout: float = DECODE_TIMEOUT,
    marks: InflightMarks | None = None,
) -> Iterator[Prepared]:
    """Yield one Prepared per source, in input order, with at most ``window`` in flight.

    A worker crash costs only the input that causes it: that input comes back failed with
    reason ``worker-crash`` and every other input in flight is prepared again. An input not
    prepared within ``timeout`` seconds comes back failed with reason ``timeout``. Inline
    (``pool`` None), ``marks`` records the input being decoded, and the inputs an earlier run
    died on are decoded in a separate process.
    """
    if pool is None:
        yield from _inline(sources, preparer, timeout, marks)
        return
    pending: deque[tuple[object, Future[Prepared]]] = deque()
    for source in sources:
        pending.append((source, pool.submit(source)))
        if len(pending) >= window:
            yield from _take(pending, pool, 1, timeout)
    yield from _take(pending, pool, len(pending), timeout)


def _inline(
    sources: Iterable[object], preparer: Preparer, timeout: float, marks: InflightMarks | None
) -> Iterator[Prepared]:
    isolated: DecodePool | None = None
    try:
        for source in sources:
            if marks is not None and str(source) in marks.suspects:
                isolated = isolated or DecodePool(preparer, 1)
                yield _alone(source, isolated, timeout)
                continue
            if marks is not None:
                marks.mark(str(source))
            prepared = _with_deadline(source, preparer, timeout)
            if marks is not None:
                marks.clear()  # before the model runs: a crash there is not this file's doing
            yield prepared
    finally:
        if isolated is not None:
            isolated.shutdown()


def _with_deadline(source: object, preparer: Preparer, timeout: float) -> Prepared:
    """Prepare in a daemon thread: one that misses the deadline is abandoned, not waited for."""
    result: list[Prepared] = []
    thread = threading.Thread(
        target=lambda: result.append(prepare_one(source, preparer)),  # type: ignore[arg-type]
        name="xmodal-decode",
        daemon=True,  # a thread stuck in read() must not keep the process from exiting
    )
    thread.start()
    thread.join(timeout)
    return result[0] if result else _timed_out(source, timeout)


def _timed_out(source: object, timeout: float) -> Prepared:
    log.warning("%s: not read and decoded within %g s; recorded as failed", source, timeout)
    return Prepared(
        str(source),
        None,
        "timeout",
        f"{source}: not read and decoded within {timeout:g} s (a stalled network mount?); the "
        "next run tries it again (see --decode-timeout)",
    )


def _take(
    pending: deque[tuple[object, Future[Prepared]]], pool: DecodePool, n: int, timeout: float
) -> Iterator[Prepared]:
    """The next ``n`` results; after a crash or a stall, every result in flight (retried one by
    one). The head's deadline runs from when it is waited for: inputs start in order and all
    earlier ones are done, so by then it has a worker of its own."""
    for _ in range(n):
        source, future = pending.popleft()
        try:
            yield future.result(timeout=timeout)
        except (BrokenProcessPool, TimeoutError) as exc:
            stalled = isinstance(exc, TimeoutError)
            in_flight = ([] if stalled else [(source, future)]) + list(pending)
            pending.clear()
            if stalled:
                pool.kill()
                yield _timed_out(source, timeout)
            else:
                log.warning(
                    "a decoding process died; retrying %d inputs one by one", len(in_flight)
                )
                pool.restart()
            for again, earlier in in_flight:
                yield _finished(earlier) or _alone(again, pool, timeout)
            return


def _finished(future: Future[Prepared]) -> Prepared | None:
    """The result of a future that completed before the pool broke, else None."""
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None


def _alone(source: object, pool: DecodePool, timeout: float) -> Prepared:
    """Prepare one input with nothing else in flight: a crash now is this input's doing."""
    try:
        return pool.submit(source).result(timeout=timeout)
    except TimeoutError:
        pool.kill()
        return _timed_out(source, timeout)
    except BrokenProcessPool:
        pool.restart()
        log.warning("decoding %s killed its worker process; recorded as failed", source)
        return Prepared(
            str(source),
            None,
            "worker-crash",
            f"{source}: the decoding process died on this input (decoder crash or out of memory)",
        )

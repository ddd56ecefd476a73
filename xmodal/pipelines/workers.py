"""Decode-and-preprocess workers for batch runs.

Workers are separate processes (decoding is CPU-bound Python/C work), fed through a bounded
window so memory stays flat however many items stream through. Every input comes back as a
:class:`Prepared`, either with pixels or with the reason it failed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from xmodal.errors import ImageDecodeError

_PREPARE: Callable[[str], np.ndarray] | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    uri: str
    pixels: np.ndarray | None
    reason: str | None = None
    message: str | None = None


def _init(prepare: Callable[[str], np.ndarray]) -> None:
    global _PREPARE
    _PREPARE = prepare


def prepare_one(uri: str, prepare: Callable[[str], np.ndarray] | None = None) -> Prepared:
    """Run the model's preparer on one file; a bad file becomes a failed Prepared."""
    prepare = prepare or _PREPARE
    try:
        return Prepared(uri, prepare(uri))
    except ImageDecodeError as exc:
        return Prepared(uri, None, exc.reason, str(exc))
    except Exception as exc:  # a decoder bug must cost one file, not the run
        return Prepared(uri, None, "error", f"{uri}: {type(exc).__name__}: {exc}")


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def make_pool(prepare: Callable[[str], np.ndarray], workers: int) -> Executor | None:
    """A process pool whose workers hold ``prepare``; None means prepare inline."""
    if workers <= 0:
        return None
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(prepare,))


def prepare_stream(
    uris: Iterable[str],
    prepare: Callable[[str], np.ndarray],
    pool: Executor | None,
    window: int,
) -> Iterator[Prepared]:
    """Yield one Prepared per uri, in input order, with at most ``window`` in flight."""
    if pool is None:
        for uri in uris:
            yield prepare_one(uri, prepare)
        return
    pending: deque[Future[Prepared]] = deque()
    for uri in uris:
        pending.append(pool.submit(prepare_one, uri))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

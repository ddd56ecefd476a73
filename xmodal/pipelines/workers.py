"""Decode-and-preprocess workers for batch runs.

Workers are separate processes (decoding is CPU-bound Python/C work), fed through a bounded
window so memory stays flat however many items stream through. Every input comes back as a
:class:`Prepared`, either with pixels or with the reason it failed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from xmodal.encoders.preprocess import Preparer
from xmodal.errors import ImageDecodeError
from xmodal.images import ORIGINAL_SIZE

_PREPARER: Preparer | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """One input after decoding: pixels and the image's full size, or why it failed."""

    uri: str
    pixels: np.ndarray | None
    reason: str | None = None
    message: str | None = None
    width: int | None = None
    height: int | None = None


def _init(preparer: Preparer) -> None:
    global _PREPARER
    _PREPARER = preparer


def prepare_one(uri: str, preparer: Preparer | None = None) -> Prepared:
    """Run the model's preparer on one file; a bad file becomes a failed Prepared."""
    preparer = preparer or _PREPARER
    try:
        image = preparer.load(uri)
        width, height = image.info.get(ORIGINAL_SIZE, image.size)
        return Prepared(uri, preparer.preprocess(image), width=width, height=height)
    except ImageDecodeError as exc:
        return Prepared(uri, None, exc.reason, str(exc))
    except Exception as exc:  # a decoder bug must cost one file, not the run
        return Prepared(uri, None, "error", f"{uri}: {type(exc).__name__}: {exc}")


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


def make_pool(preparer: Preparer, workers: int) -> Executor | None:
    """A process pool whose workers hold ``preparer``; None means prepare inline."""
    if workers <= 0:
        return None
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(preparer,))


def prepare_stream(
    uris: Iterable[str],
    preparer: Preparer,
    pool: Executor | None,
    window: int,
) -> Iterator[Prepared]:
    """Yield one Prepared per uri, in input order, with at most ``window`` in flight."""
    if pool is None:
        for uri in uris:
            yield prepare_one(uri, preparer)
        return
    pending: deque[Future[Prepared]] = deque()
    for uri in uris:
        pending.append(pool.submit(prepare_one, uri))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

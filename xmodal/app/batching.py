"""Concurrent text queries share one encoder call: the server's batching.

On a CPU one text query already keeps every core busy, so running several side by side gains
nothing; encoding them as one batch does (one pass of larger matrix products). ``TextBatcher``
wraps an encoder: whoever calls ``encode_texts`` first encodes, and queries that arrive
meanwhile wait and are encoded together in the next pass.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class _Job:
    __slots__ = ("done", "error", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class TextBatcher:
    """An encoder whose single-text ``encode_texts`` calls from many threads are batched.

    Everything else (``spec``, ``encode_images``, other ``encode_texts`` calls) passes through to
    the wrapped encoder unchanged, so a ``Retriever`` can use it in place of the encoder.
    """

    def __init__(self, encoder: Any, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._encoder = encoder
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._busy = False
        self.batches: int = 0  # encoder passes made, for tests and diagnostics

    @property
    def wrapped(self) -> Any:
        return self._encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_texts(self, texts: Any, **options: Any) -> np.ndarray:
        if options or isinstance(texts, str) or len(texts) != 1:
            return self._encoder.encode_texts(texts, **options)
        job = _Job(texts[0])
        with self._lock:
            self._pending.append(job)
            leader = not self._busy
            self._busy = True
        if leader:
            self._drain()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.vector is not None
        return job.vector[None, :]

    def _drain(self) -> None:
        """Encode pending texts, a batch per pass, until none are left."""
        while True:
            with self._lock:
                batch = self._pending[: self._max_batch]
                del self._pending[: len(batch)]
                if not batch:
                    self._busy = False
                    return
            try:
                vectors = self._encoder.encode_texts([job.text for job in batch])
            except BaseException as exc:  # every waiter gets the error, none hangs
                for job in batch:
                    job.error = exc
                    job.done.set()
                continue
            finally:
                self.batches += 1
            for job, vector in zip(batch, vectors, strict=True):
                job.vector = vector
                job.done.set()


def batched(retriever: Any) -> Any:
    """``retriever`` with its encoder wrapped in a :class:`TextBatcher`; others unchanged."""
    from xmodal.pipelines.search import Retriever

    if type(retriever) is not Retriever or isinstance(retriever.encoder, TextBatcher):
        return retriever
    return Retriever(TextBatcher(retriever.encoder), retriever.follower)

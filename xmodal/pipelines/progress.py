"""Where a batch run spends its time, and the progress bar it shows meanwhile.

Stages: ``walk`` (listing the sources), ``hash`` (catalog and ledger look-ups, content hashes,
reuse of stored vectors), ``decode_wait`` (waiting for decoded pixels: all of decoding when it
runs inline, only the part the workers did not hide otherwise), ``encode`` (the model),
``write`` (staging rows and ledger entries) and ``commit`` (publishing each chunk).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

STAGES = ("walk", "hash", "decode_wait", "encode", "write", "commit")
_T = TypeVar("_T")


class StageTimes:
    """Seconds per stage, accumulated (a resumed run starts from what it had recorded)."""

    def __init__(self, earlier: dict[str, float] | None = None) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0) | dict(earlier or {})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def timed(self, items: Iterable[_T], name: str) -> Iterator[_T]:
        """Yield from ``items``, charging the time spent producing each to ``name``."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                item = next(iterator, _DONE)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.seconds.items()}


_DONE = object()


def describe(stages: dict[str, float]) -> str:
    """E.g. 'walk 0.1 s, hash 0.3 s, decode wait 1.2 s, encode 9.8 s, ...'."""
    return ", ".join(f"{name.replace('_', ' ')} {stages.get(name, 0.0):.1f} s" for name in STAGES)


def progress_bar(enabled: bool | None, total: int | None, done: int = 0) -> tqdm:
    """A bar counting inputs: rate in img/s always, an ETA when ``total`` is known.

    ``enabled`` None shows it on terminals only. The total is never counted by walking the
    sources twice; callers pass one when they know it for free.
    """
    return tqdm(
        total=total,
        initial=done,
        unit="img",
        smoothing=0.1,
        dynamic_ncols=True,
        disable=True if enabled is False else None,
    )

"""Index image files into a collection: sources -> decode -> encode -> store.

Decoding runs in worker processes one window ahead of the model; vectors and catalog rows are
committed in chunks, so an interrupted run keeps what it committed and a re-run skips files
whose path, size and mtime are unchanged.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from xmodal.encoders import Encoder
from xmodal.index import Collection, Record
from xmodal.pipelines.maintenance import prune_missing, reuse_stored, with_hashes
from xmodal.pipelines.sources import Item, iter_items
from xmodal.pipelines.workers import Prepared, default_workers, make_pool, prepare_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    batch_size: int = 32
    workers: int | None = None  # decoding processes; None: chosen for the device; 0: inline
    commit_every: int = 2048
    progress: bool | None = None  # None: a progress bar on terminals only
    prune: bool = False  # afterwards, remove items under the sources whose files are gone


@dataclass(frozen=True)
class Failure:
    uri: str
    reason: str
    message: str


@dataclass(frozen=True)
class IndexReport:
    """What a run did with every input: seen = indexed + unchanged + failed.

    ``reused`` counts the indexed files whose bytes were already catalogued (moved, renamed or
    copied): they took the stored vector without being encoded. ``pruned`` counts items removed
    because their files no longer exist (``IndexConfig.prune``).
    """

    seen: int
    indexed: int
    unchanged: int
    failed: int
    seconds: float
    failures: tuple[Failure, ...] = field(default=(), repr=False)
    reused: int = 0
    pruned: int = 0

    @property
    def images_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"seen {self.seen}: indexed {self.indexed}, unchanged {self.unchanged}, "
            f"failed {self.failed} in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s)"
        ) + (f", pruned {self.pruned}" if self.pruned else "")


@dataclass
class _Tally:
    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    failures: list[Failure] = field(default_factory=list)


def index_paths(
    encoder: Encoder,
    collection: Collection,
    sources: Iterable[str],
    config: IndexConfig = IndexConfig(),
) -> IndexReport:
    """Embed every image under ``sources`` into ``collection`` (opened writable)."""
    collection.check_encoder(encoder.spec.to_dict())
    workers = config.workers
    if workers is None:
        workers = default_workers(encoder.spec.device)
    tally, started = _Tally(), time.perf_counter()
    pool = make_pool(encoder.preparer, workers)
    bar = tqdm(unit="img", disable=True if config.progress is False else None)
    try:
        for chunk in _chunks(iter_items(sources), config.commit_every):
            todo, reused = reuse_stored(collection, with_hashes(_changed(collection, chunk, tally)))
            tally.indexed += reused
            tally.reused += reused
            bar.update(len(chunk) - len(todo))
            stream = prepare_stream(
                [i.uri for i in todo], encoder.preparer, pool, 4 * config.batch_size
            )
            _embed_chunk(encoder, collection, todo, stream, config.batch_size, tally, bar)
            collection.commit()
        pruned = prune_missing(collection, sources) if config.prune else 0
        collection.commit()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    elapsed = time.perf_counter() - started
    return IndexReport(
        seen=tally.seen,
        indexed=tally.indexed,
        unchanged=tally.unchanged,
        failed=len(tally.failures),
        seconds=elapsed,
        failures=tuple(tally.failures),
        reused=tally.reused,
        pruned=pruned,
    )


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _changed(collection: Collection, chunk: list[Item], tally: _Tally) -> list[Item]:
    """Drop items whose path, size and mtime match the catalog."""
    tally.seen += len(chunk)
    known = collection.ids_for_paths([item.uri for item in chunk])
    records = collection.get_records(list(known.values())) if known else {}
    todo = []
    for item in chunk:
        record = records.get(known.get(item.uri, -1))
        if record is not None and record.size == item.size and record.mtime == item.mtime:
            tally.unchanged += 1
        else:
            todo.append(item)
    return todo


def _embed_chunk(
    encoder: Encoder,
    collection: Collection,
    items: list[Item],
    stream: Iterator[Prepared],
    batch_size: int,
    tally: _Tally,
    bar: tqdm,
) -> None:
    batch: list[tuple[Item, Prepared]] = []
    for item, prepared in zip(items, stream, strict=True):
        if prepared.pixels is None:
            log.info("failed: %s", prepared.message)
            tally.failures.append(
                Failure(item.uri, prepared.reason or "error", prepared.message or "")
            )
            bar.update(1)
            continue
        batch.append((item, prepared))
        if len(batch) == batch_size:
            _flush(encoder, collection, batch, tally, bar)
    _flush(encoder, collection, batch, tally, bar)


def _flush(
    encoder: Encoder,
    collection: Collection,
    batch: list[tuple[Item, Prepared]],
    tally: _Tally,
    bar: tqdm,
) -> None:
    if not batch:
        return
    vectors = encoder.encode_pixels(np.stack([p.pixels for _, p in batch]))
    records = [
        Record(i.uri, i.size, i.mtime, i.caption, p.width, p.height, content_hash=i.content_hash)
        for i, p in batch
    ]
    collection.add(vectors, records)
    tally.indexed += len(batch)
    bar.update(len(batch))
    batch.clear()

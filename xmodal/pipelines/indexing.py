"""Index image files into a collection: sources -> decode -> encode -> store.

Decoding runs in worker processes one window ahead of the model (a bounded queue); the model
encodes batches in the encoder's precision; vectors, catalog rows and the ledger entries of every
input are committed together in chunks of ``commit_every`` inputs. An interrupted run keeps what
it committed and is resumed by the next run over the same sources (``xmodal.pipelines.accounting``);
a later run passes over files whose path, size and mtime are unchanged.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from xmodal.encoders import Encoder
from xmodal.index import Collection, Record
from xmodal.pipelines.accounting import Failure, IndexReport, RunBook
from xmodal.pipelines.maintenance import prune_missing, reuse_stored, with_hashes
from xmodal.pipelines.progress import progress_bar
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, iter_inputs
from xmodal.pipelines.workers import (
    DecodePool,
    Prepared,
    default_workers,
    make_pool,
    prepare_stream,
)

__all__ = ["Failure", "IndexConfig", "IndexReport", "index_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    batch_size: int = 32
    workers: int | None = None  # decoding processes; None: chosen for the device; 0: inline
    commit_every: int = 2048  # inputs per committed chunk (a resumed run keeps its own)
    progress: bool | None = None  # None: a progress bar on terminals only
    prune: bool = False  # afterwards, remove items under the sources whose files are gone
    retry_failed: bool = False  # decode inputs that failed before even if they did not change
    sources: SourcePolicy = SourcePolicy()


def index_paths(
    encoder: Encoder,
    collection: Collection,
    sources: Iterable[str],
    config: IndexConfig = IndexConfig(),
) -> IndexReport:
    """Embed every image under ``sources`` into ``collection`` (opened writable)."""
    collection.check_encoder(encoder.spec.to_dict())
    sources = [str(source) for source in sources]
    book = RunBook.start(collection, sources, config.commit_every)
    workers = config.workers
    if workers is None:
        workers = default_workers(encoder.spec.device)
    pool = make_pool(encoder.preparer, workers)
    bar = progress_bar(config.progress, book.expected_total())
    try:
        inputs = book.times.timed(iter_inputs(sources, config.sources), "walk")
        for chunk in _chunks(inputs, book.commit_every):
            worked = _index_chunk(encoder, chunk, pool, book, bar, config)
            book.checkpoint(worked)
        pruned = prune_missing(collection, sources) if config.prune else 0
        book.finish(pruned)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return book.report()


def _chunks(items: Iterator[Item | Skipped], size: int) -> Iterator[list[Item | Skipped]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _index_chunk(
    encoder: Encoder,
    chunk: list[Item | Skipped],
    pool: DecodePool | None,
    book: RunBook,
    bar: tqdm,
    config: IndexConfig,
) -> bool:
    """Account for every input of the chunk; True when anything was decoded or stored."""
    with book.times.stage("hash"):
        todo = with_hashes(book.sort(chunk, config.retry_failed))
        rest, _ = reuse_stored(book.collection, todo)
        left = {item.uri for item in rest}
        for item in todo:
            if item.uri not in left:
                book.note(book.entry(item, "indexed"), reused=True)
    bar.update(len(chunk) - len(rest))
    window = 4 * config.batch_size
    stream = prepare_stream([i.source for i in rest], encoder.preparer, pool, window)
    _embed(encoder, rest, book.times.timed(stream, "decode_wait"), book, bar, config.batch_size)
    return bool(todo)


def _embed(
    encoder: Encoder,
    items: list[Item],
    stream: Iterator[Prepared],
    book: RunBook,
    bar: tqdm,
    batch_size: int,
) -> None:
    batch: list[tuple[Item, Prepared]] = []
    for item, prepared in zip(items, stream, strict=True):
        if prepared.pixels is None:
            log.info("failed: %s", prepared.message)
            reason = prepared.reason or "error"
            book.note(book.entry(item, "failed", reason, prepared.message or ""))
            bar.update(1)
            continue
        batch.append((item, prepared))
        if len(batch) == batch_size:
            _flush(encoder, batch, book, bar)
    _flush(encoder, batch, book, bar)


def _flush(encoder: Encoder, batch: list[tuple[Item, Prepared]], book: RunBook, bar: tqdm) -> None:
    if not batch:
        return
    with book.times.stage("encode"):
        vectors = encoder.encode_pixels(np.stack([p.pixels for _, p in batch]))
    with book.times.stage("write"):
        records = [
            Record(i.uri, i.size, i.mtime, i.caption, p.width, p.height, i.content_hash)
            for i, p in batch
        ]
        book.collection.add(vectors, records)
        for item, _ in batch:
            book.note(book.entry(item, "indexed"))
    bar.update(len(batch))
    batch.clear()

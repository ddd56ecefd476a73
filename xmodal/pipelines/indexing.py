"""Index image files into a collection: sources -> decode -> encode -> store.

Decoding runs in worker processes one window ahead of the model (a bounded queue); the model
encodes batches in the encoder's precision; vectors, catalog rows and the ledger entries of every
input are committed together in chunks of ``commit_every`` inputs. An interrupted run keeps what
it committed and is resumed by the next run over the same sources (``xmodal.pipelines.accounting``);
a later run passes over files whose path, size and mtime are unchanged. Files whose bytes are
already catalogued, or were embedded earlier in the same run, take that vector instead of being
decoded and encoded again (``xmodal.pipelines.maintenance.reuse_stored``).
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
from xmodal.pipelines.inflight import InflightMarks
from xmodal.pipelines.maintenance import prune_missing, reuse_stored, with_hashes
from xmodal.pipelines.progress import progress_bar
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, iter_inputs
from xmodal.pipelines.workers import (
    DECODE_TIMEOUT,
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
    decode_timeout: float = DECODE_TIMEOUT  # seconds per input to be read and decoded


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
    marks = InflightMarks(collection.directory)
    bar = progress_bar(config.progress, book.expected_total())
    finished = False
    try:
        inputs = book.times.timed(iter_inputs(sources, config.sources), "walk")
        decoder = _Decoder(encoder, pool, marks, config)
        for chunk in _chunks(inputs, book.commit_every):
            worked = _index_chunk(decoder, chunk, book, bar, config.retry_failed)
            book.checkpoint(worked)
        pruned = prune_missing(collection, sources) if config.prune else 0
        book.finish(pruned)
        finished = True
    finally:
        bar.close()
        marks.close(finished=finished)
        if pool is not None:
            pool.shutdown()
    return book.report()


def _chunks(items: Iterator[Item | Skipped], size: int) -> Iterator[list[Item | Skipped]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass(frozen=True)
class _Decoder:
    """What decoding and encoding a list of items needs, fixed for the run."""

    encoder: Encoder
    pool: DecodePool | None
    marks: InflightMarks
    config: IndexConfig

    def embed(self, items: list[Item], book: RunBook, bar: tqdm) -> None:
        window = 4 * self.config.batch_size
        stream = prepare_stream(
            [i.source for i in items],
            self.encoder.preparer,
            self.pool,
            window,
            timeout=self.config.decode_timeout,
            marks=self.marks,
        )
        timed = book.times.timed(stream, "decode_wait")
        _embed(self.encoder, items, timed, book, bar, self.config.batch_size)


def _index_chunk(
    decoder: _Decoder, chunk: list[Item | Skipped], book: RunBook, bar: tqdm, retry_failed: bool
) -> bool:
    """Account for every input of the chunk; True when anything was decoded or stored.

    Of several files with the same bytes only the first is decoded: the others take its vector
    once it is staged, like files whose bytes an earlier run catalogued.
    """
    with book.times.stage("hash"):
        todo = with_hashes(book.sort(chunk, retry_failed))
        rest = _reuse(book, todo)
    bar.update(len(chunk) - len(rest))
    first, copies = _split_copies(rest)
    decoder.embed(first, book, bar)
    if copies:
        with book.times.stage("hash"):
            left = _reuse(book, copies)
        bar.update(len(copies) - len(left))
        decoder.embed(left, book, bar)  # the first copy failed, or changed since it was hashed
    return bool(todo)


def _reuse(book: RunBook, items: list[Item]) -> list[Item]:
    """Record the items whose bytes have a stored (or staged) vector; return the others."""
    rest, _ = reuse_stored(book.collection, items)
    left = {item.uri for item in rest}
    for item in items:
        if item.uri not in left:
            book.note(book.entry(item, "indexed"), reused=True)
    return rest


def _split_copies(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(the first item of every content hash, the later ones), each in input order."""
    seen: set[str] = set()
    first, copies = [], []
    for item in items:
        if item.content_hash is not None and item.content_hash in seen:
            copies.append(item)
        else:
            first.append(item)
            if item.content_hash is not None:
                seen.add(item.content_hash)
    return first, copies


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
        # The hash decoding made of the bytes it decoded: the file may have been rewritten
        # since the walk hashed it, and the catalog must describe the vector it stores.
        records = [
            Record(i.uri, i.size, i.mtime, i.caption, p.width, p.height, p.content_hash)
            for i, p in batch
        ]
        book.collection.add(vectors, records)
        for item, _ in batch:
            book.note(book.entry(item, "indexed"))
    bar.update(len(batch))
    batch.clear()

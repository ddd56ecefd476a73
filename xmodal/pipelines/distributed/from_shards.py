"""Fill a collection from committed embedding shards, with the single-machine path's accounting.

Inputs are taken in source order in the run's chunks (``RunBook.commit_every``), as
``index_paths`` takes them: the run book records unchanged, skipped and known-bad inputs; items
whose bytes are catalogued reuse the stored vector; the rest take their vector from their shard,
or are recorded failed with the shard's reason. Ids are therefore assigned in the same order as
without Ray, every input gets the same ledger status, and a run killed here resumes like the
single-machine path (inputs the interrupted run already committed are passed over).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from xmodal.encoders import Encoder
from xmodal.index import Record
from xmodal.pipelines.accounting import RunBook
from xmodal.pipelines.distributed.shards import EMBEDDED, FAILED, ShardPlan, ShardRow, ShardStore
from xmodal.pipelines.maintenance import reuse_stored, with_hashes
from xmodal.pipelines.sources import Item, Skipped
from xmodal.pipelines.workers import prepare_one

log = logging.getLogger(__name__)

_Done = tuple[ShardRow, np.ndarray | None]


def fill_from_shards(
    encoder: Encoder,
    book: RunBook,
    inputs: Sequence[Item | Skipped],
    plans: Sequence[ShardPlan],
    store: ShardStore,
    retry_failed: bool = False,
) -> None:
    """Account for every input and add the embedded ones, chunk by chunk, in source order."""
    rows = _rows(plans, store)
    size = book.commit_every
    for start in range(0, len(inputs), size):
        chunk = inputs[start : start + size]
        done = {item.uri: next(rows) for item in chunk if isinstance(item, Item)}
        book.checkpoint(_add_chunk(encoder, book, chunk, done, retry_failed))


def _rows(plans: Sequence[ShardPlan], store: ShardStore) -> Iterator[_Done]:
    for plan in plans:
        rows, vectors = store.read(plan)
        for row in rows:
            yield row, vectors[row.row] if row.status == EMBEDDED else None


def _add_chunk(
    encoder: Encoder,
    book: RunBook,
    chunk: Sequence[Item | Skipped],
    done: dict[str, _Done],
    retry_failed: bool,
) -> bool:
    """Record and stage one chunk; True when it stored anything (the chunk is committed)."""
    with book.times.stage("hash"):
        todo = _hashed(book.sort(chunk, retry_failed), done)
        rest, _ = reuse_stored(book.collection, todo)
        left = {item.uri for item in rest}
        for item in todo:
            if item.uri not in left:
                book.note(book.entry(item, "indexed"), reused=True)
    vectors, added = [], []
    for item in rest:
        row, vector = done[item.uri]
        if vector is None and row.status != FAILED:  # unchanged when sharded, changed since
            row, vector = _embed_here(encoder, item)
        if vector is None:
            book.note(book.entry(item, "failed", row.reason or "error", row.message or ""))
            continue
        vectors.append(vector)
        added.append((item, row))
    if vectors:
        with book.times.stage("write"):
            book.collection.add(np.stack(vectors).astype(np.float32), [_record(*x) for x in added])
            for item, _ in added:
                book.note(book.entry(item, "indexed"))
    return bool(todo)


def _hashed(items: list[Item], done: dict[str, _Done]) -> list[Item]:
    """Items with the content hash their decoding task computed (hashed here if it had none)."""
    hashed = [replace(item, content_hash=done[item.uri][0].content_hash) for item in items]
    missing = [item for item in hashed if item.content_hash is None]
    if not missing:
        return hashed
    fresh = {item.uri: item for item in with_hashes(missing)}
    return [fresh.get(item.uri, item) for item in hashed]


def _record(item: Item, row: ShardRow) -> Record:
    return Record(
        item.uri, item.size, item.mtime, item.caption, row.width, row.height, item.content_hash
    )


def _embed_here(encoder: Encoder, item: Item) -> _Done:
    prepared = prepare_one(item.source, encoder.preparer)
    if prepared.pixels is None:
        return ShardRow(item.uri, FAILED, reason=prepared.reason, message=prepared.message), None
    vector = encoder.encode_pixels(prepared.pixels[None])[0]
    return ShardRow(item.uri, EMBEDDED, 0, width=prepared.width, height=prepared.height), vector

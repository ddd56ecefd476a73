"""Keeping a collection in step with the disk: removal, pruning, and reuse of moved files' vectors.

Files are recognised by a content hash (blake2b of their bytes, 128 bits) stored in the catalog.
When a run meets a file whose bytes are already catalogued, it takes the stored raw embedding
instead of decoding and encoding the file again: the collection was built by the same encoder
(``index_paths`` checks), so the vector would come out the same, up to the float16 rounding the
raw embeddings are stored with. A moved or renamed file thereby gets a new record (and a new id:
ids are never reused) and its old row, whose file no longer exists, is removed. A copy of a file
that still exists reuses the vector too and both rows stay.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from xmodal.images import content_hasher
from xmodal.index import Collection, Record
from xmodal.index.filters import Clause, Filter
from xmodal.pipelines.sources import Item, Span

log = logging.getLogger(__name__)
_READ = 1 << 20
_BATCH = 10_000


def file_hash(source: str | os.PathLike | Span) -> str | None:
    """The content hash of a file's bytes, or of a span's (a tar member), as decoding makes it.

    None when it cannot be read or is not a regular file (decoding reports why). Used to find
    stored vectors before decoding; the hash catalogued with a decoded file is the one decoding
    made of the very bytes it decoded (``Prepared.content_hash``).
    """
    digest = content_hasher()
    span = source if isinstance(source, Span) else None
    path = span.path if span else source
    left = span.length if span else None  # None: to the end of the file
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # reading a fifo would block the run
        with open(path, "rb") as handle:
            handle.seek(span.offset if span else 0)
            while left is None or left > 0:
                block = handle.read(_READ if left is None else min(_READ, left))
                if not block:
                    break
                digest.update(block)
                left = None if left is None else left - len(block)
    except (OSError, ValueError):
        return None
    return digest.hexdigest()


def with_hashes(items: Iterable[Item]) -> list[Item]:
    return [replace(item, content_hash=file_hash(item.source)) for item in items]


def reuse_stored(collection: Collection, items: Sequence[Item]) -> tuple[list[Item], int]:
    """Stage items whose bytes are catalogued with the stored vector; return the rest and a count.

    Rows of the same bytes whose files are gone (the file moved) are removed.
    """
    found = collection.ids_for_hashes(i.content_hash for i in items if i.content_hash)
    if not found:
        return list(items), 0
    stored = _stored_rows(collection, sorted({ids[0] for ids in found.values()}))
    known = collection.get_records(sorted({i for ids in found.values() for i in ids}))
    rest, vectors, records, gone = [], [], [], set()
    for item in items:
        ids = [i for i in found.get(item.content_hash or "", []) if i in known]
        if not ids or ids[0] not in stored:
            rest.append(item)
            continue
        source = known[ids[0]]
        vectors.append(stored[ids[0]])
        records.append(
            Record(
                item.uri, item.size, item.mtime, item.caption, source.width, source.height,
                content_hash=item.content_hash,
            )
        )  # fmt: skip
        gone.update(i for i in ids if known[i].path != item.uri and not _exists(known[i].path))
    if records:
        collection.remove(sorted(gone))
        # Not renormalised: float16 rows pass the unit-norm check and so are stored bit-identical.
        collection.add(np.stack(vectors), records)
        log.info("reused %d stored vectors (%d moved files)", len(records), len(gone))
    return rest, len(records)


def _stored_rows(collection: Collection, wanted: list[int]) -> dict[int, np.ndarray]:
    """Stored raw embeddings (as float32) of the ``wanted`` ids, copied out of the memmap."""
    all_ids, rows = collection.raw_embeddings()
    positions = np.flatnonzero(np.isin(all_ids, wanted))
    vectors = np.asarray(rows[positions], np.float32)
    return dict(zip(all_ids[positions].tolist(), vectors, strict=True))


def ids_under(collection: Collection, paths: Iterable[str | os.PathLike]) -> np.ndarray:
    """Ids of items at the given paths, anywhere under them as folders, or in them as shards."""
    found: list[np.ndarray] = [np.zeros(0, np.int64)]
    for raw in paths:
        path = str(Path(raw).expanduser().resolve())
        found.append(collection.ids_where(Filter((Clause("path", "=", path),))))
        prefix = path if path.endswith("/") else path + "/"
        found.append(collection.ids_where(Filter((Clause("path", "^=", prefix),))))
        found.append(collection.ids_where(Filter((Clause("path", "^=", path + "::"),))))
    return np.unique(np.concatenate(found))


def remove_paths(collection: Collection, paths: Iterable[str | os.PathLike]) -> int:
    """Stage removal of the items at or under ``paths``; returns how many. Commit to publish."""
    return collection.remove(ids_under(collection, paths))


def prune_missing(collection: Collection, sources: Iterable[str | os.PathLike]) -> int:
    """Stage removal of items under ``sources`` whose files no longer exist; returns how many."""
    ids = ids_under(collection, sources)
    missing: list[int] = []
    for start in range(0, len(ids), _BATCH):
        records = collection.get_records(ids[start : start + _BATCH])
        missing.extend(i for i, record in records.items() if not _exists(record.path))
    return collection.remove(missing) if missing else 0


def _exists(path: str) -> bool:
    # A tar member's uri is ``shard.tar::member``: it counts as present while its shard is.
    shard, member, _ = path.partition("::")
    return os.path.lexists(path) or (bool(member) and os.path.isfile(shard))

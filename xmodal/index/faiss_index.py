"""FAISS in one place: build from a factory string, train, remove, read and write durably.

The collection always wraps the factory index in ``IndexIDMap2`` so FAISS and the catalog share
the same stable int64 ids, and always uses inner product: rows are L2-normalised, so the score is
the cosine similarity.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import faiss
import numpy as np

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import ondisk
from xmodal.index.choice import refuse_id_map
from xmodal.index.durable import Sink, durable_write
from xmodal.index.rowset import RowSet

log = logging.getLogger(__name__)

TRAIN_PER_LIST = 64
TRAIN_MIN_ROWS = 65536


def new_index(dim: int, index_key: str) -> faiss.IndexIDMap2:
    """An empty id-mapped inner-product index for ``index_key`` (a FAISS factory string)."""
    refuse_id_map(index_key)
    try:
        base = faiss.index_factory(int(dim), index_key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CollectionError(
            f"FAISS cannot build index_key {index_key!r} for dim {dim}: {_reason(exc)}; "
            "use 'Flat' (exact search) or another FAISS factory string"
        ) from exc
    return faiss.IndexIDMap2(base)  # the Python wrapper keeps ``base`` alive with it


def fill(
    index: faiss.IndexIDMap2, ids: np.ndarray, rows: np.ndarray | RowSet, index_key: str
) -> None:
    """Train ``index`` if its factory needs it (on a sample, ``training_sample``), then add the
    rows block by block: memory beyond the index itself stays one block."""
    rows = rows if isinstance(rows, RowSet) else RowSet.of(rows)
    train(index, training_sample(index, rows), index_key)
    if not len(rows) or not index.is_trained:
        return
    start = 0
    for block in rows.blocks():
        index.add_with_ids(block, np.ascontiguousarray(ids[start : start + len(block)], np.int64))
        start += len(block)


def training_sample(index: faiss.Index, rows: RowSet) -> np.ndarray:
    """The rows ``index`` is trained on: all of them up to ``training_rows``, else evenly spaced.

    Nothing for an index that needs no training (Flat, HNSW over flat storage).
    """
    if index.is_trained:
        return np.zeros((0, rows.dim), np.float32)
    return rows.sample(training_rows(index))


def training_rows(index: faiss.Index) -> int:
    """At most TRAIN_PER_LIST rows per inverted list, and at least TRAIN_MIN_ROWS.

    k-means needs a few dozen points per centroid (FAISS warns under 39 and itself samples
    256); PQ and OPQ codebooks (256 centroids per sub-quantiser) and SQ ranges learn from
    TRAIN_MIN_ROWS. Training on everything would hold ``n * 4d`` bytes for the k-means alone:
    2 GB per million 512-d rows.
    """
    ivf = faiss.try_extract_index_ivf(index)
    lists = ivf.nlist if ivf is not None else 0
    return max(TRAIN_MIN_ROWS, TRAIN_PER_LIST * lists)


def train(index: faiss.Index, vectors: np.ndarray, index_key: str) -> None:
    """Train ``index`` on ``vectors`` unless it needs no training (or there is nothing yet)."""
    if not index.is_trained:
        if len(vectors) == 0:
            return  # nothing to learn from; stays untrained until vectors arrive
        if "OPQ" in index_key and len(vectors) < index.d:
            # FAISS 1.15 aborts the process (memory corruption) training OPQ on fewer rows than
            # dimensions, so this is refused before FAISS sees it.
            raise CollectionError(
                f"index_key {index_key!r} needs at least {index.d} vectors to train its OPQ "
                f"rotation, got {len(vectors)}; add more items first or use 'ivf-flat', 'hnsw' "
                "or 'Flat'"
            )
        log.info("training FAISS index %s on %d vectors", index_key, len(vectors))
        try:
            index.train(vectors)
        except RuntimeError as exc:
            raise CollectionError(
                f"index_key {index_key!r} could not be trained on {len(vectors)} vectors "
                f"({_reason(exc)}); add more items before committing or create the collection with "
                "index_key='Flat'"
            ) from exc


def try_remove(index: faiss.IndexIDMap2, ids: np.ndarray) -> bool:
    """Remove ``ids`` from the index; False where it cannot (then the caller filters them).

    ``IndexIDMap2`` compacts its id map on removal, which is right only for indexes that
    renumber their rows compactly too (Flat, SQ, PQ: the flat-codes family). IVF keeps its
    internal ids, so removing through the map would attach later rows to the wrong ids; HNSW
    cannot remove at all.
    """
    if index.ntotal == 0 or len(ids) == 0:
        return True
    if not isinstance(faiss.downcast_index(index.index), faiss.IndexFlatCodes):
        return False
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def index_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The ids held by the index, in storage order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def write_index(index: faiss.Index, directory: Path, name: str) -> Path:
    """Write durably, streaming through Python I/O (which raises when a write fails).

    Given a path, FAISS writes in place and ignores a failed close: it prints "close error: File
    too large" and returns as if all went well.
    """

    def write(sink: Sink) -> None:
        faiss.write_index(index, faiss.PyCallbackIOWriter(sink.write))

    return durable_write(directory, name, write)


def read_index(path: Path, *, lists_on_disk: bool = False) -> faiss.IndexIDMap2:
    """Read a committed index file and check it is what the collection writes.

    ``lists_on_disk``: its IVF lists are a file beside it, memory-mapped read-only
    (``xmodal.index.ondisk``).
    """
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY if lists_on_disk else 0
    quiet = ondisk.stdout_to_stderr() if lists_on_disk else contextlib.nullcontext()
    try:
        with quiet:
            index = faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise CollectionCorruptError(
            f"collection file {path} is not a readable FAISS index"
        ) from exc
    if not isinstance(index, faiss.IndexIDMap2):
        raise CollectionCorruptError(f"collection file {path} is not an id-mapped FAISS index")
    return index


def _reason(exc: RuntimeError) -> str:
    """FAISS's message without its C++ location prefix ("Error in <signature> at file:line: ")."""
    line = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", line)

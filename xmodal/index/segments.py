"""Segments in memory and on disk: immutable (ids, float16 rows, FAISS index) plus tombstones.

A loaded segment keeps its FAISS index in memory and its raw rows memory-mapped. Deleted rows are
never removed from a segment's files: they are listed in the segment's current tombstones file
(sorted int64 ids) and masked out of every search; a merge finally leaves them behind. Readers
keep what they loaded (the index is read whole, the memory map and the open file survive an
unlink on POSIX), so a writer may sweep files of older generations under them.

A Flat segment is searched with numpy over the float32 rows FAISS stores (``xmodal.index.exact``),
an ANN segment by FAISS; an ANN answer that comes back short is answered exactly from the raw rows.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from xmodal.errors import CollectionCorruptError
from xmodal.index import exact, faiss_index, ondisk, tuning
from xmodal.index import manifest as mf
from xmodal.index.durable import Sink, durable_write
from xmodal.index.manifest import FileEntry, Segment
from xmodal.index.rowset import Project, RowSet

log = logging.getLogger(__name__)
# (index dim, factory string, ids, the rows (read in the index space)) -> a filled id-mapped index
IndexBuilder = Callable[[int, str, np.ndarray, RowSet], faiss.IndexIDMap2]


class LoadedSegment:
    """One segment of the current generation plus the tombstones this handle staged for it."""

    def __init__(
        self,
        meta: Segment,
        ids: np.ndarray,
        vectors: np.ndarray,
        index: faiss.IndexIDMap2,
        directory: Path | None = None,
    ) -> None:
        self.meta = meta
        self.ids = ids
        self.vectors = vectors
        self._index: faiss.IndexIDMap2 | None = index
        self.directory = directory  # where the index file is read again after release_index
        self.committed_dead = np.zeros(0, np.int64)
        self.dead = np.zeros(0, np.int64)  # committed + staged tombstones, sorted
        self._dead_mask: np.ndarray | None = None
        self._rows32: np.ndarray | None = None

    @classmethod
    def load(cls, directory: Path, meta: Segment, dim: int, index_dim: int) -> LoadedSegment:
        index = faiss_index.read_index(
            directory / meta.index.name, lists_on_disk=meta.lists is not None
        )
        ids = np.load(directory / meta.ids.name, allow_pickle=False)
        vectors = np.load(directory / meta.embeddings.name, mmap_mode="r", allow_pickle=False)
        shapes = (index.ntotal, len(ids), vectors.shape[0])
        kinds_ok = ids.dtype == np.int64 and vectors.dtype == np.float16 and ids.ndim == 1
        if not (kinds_ok and vectors.shape[1:] == (dim,) and index.d == index_dim) or set(
            shapes
        ) != {meta.count}:
            raise CollectionCorruptError(
                f"collection files of segment {meta.name} in {directory} disagree: manifest count "
                f"{meta.count} and dim {dim}, index/ids/embeddings rows {shapes}; rebuild the "
                "collection"
            )
        tuning.apply_params(index, meta.search_params)
        segment = cls(meta, ids, vectors, index, directory)
        if meta.deletes is not None:
            dead = np.load(directory / meta.deletes.name, allow_pickle=False)
            if dead.dtype != np.int64 or len(dead) != meta.deleted:
                raise CollectionCorruptError(
                    f"collection file {directory / meta.deletes.name} disagrees with the manifest "
                    f"({len(dead)} tombstones, the manifest says {meta.deleted})"
                )
            segment.committed_dead = dead
            segment.dead = dead
        return segment

    @property
    def index(self) -> faiss.IndexIDMap2:
        """The segment's FAISS index, read from its file again if ``release_index`` dropped it."""
        if self._index is None:
            if self.directory is None:
                raise RuntimeError(f"segment {self.meta.name} has no index and no directory")
            index = faiss_index.read_index(
                self.directory / self.meta.index.name, lists_on_disk=self.meta.lists is not None
            )
            tuning.apply_params(index, self.meta.search_params)
            self._index = index
        return self._index

    def release_index(self) -> None:
        """Drop the in-memory index (a merge is about to replace it); read again if needed."""
        if self.directory is not None:
            self._index = None
            self._rows32 = None  # a view into the index's storage

    def with_meta(self, meta: Segment) -> LoadedSegment:
        """The same rows and index under a new manifest entry (tombstones not carried)."""
        return LoadedSegment(meta, self.ids, self.vectors, self.index, self.directory)

    @property
    def live(self) -> int:
        return len(self.ids) - len(self.dead)

    @property
    def flat(self) -> bool:
        return isinstance(faiss.downcast_index(self.index.index), faiss.IndexFlat)

    def kill(self, ids: np.ndarray) -> np.ndarray:
        """Tombstone those of ``ids`` that are live rows here; returns them."""
        hit = ids[np.isin(ids, self.ids) & ~np.isin(ids, self.dead)]
        if len(hit):
            self.dead = np.union1d(self.dead, hit)
            self._dead_mask = None
        return hit

    def revive_staged(self) -> None:
        """Forget tombstones staged by this handle (close without commit, failed commit)."""
        self.dead = self.committed_dead
        self._dead_mask = None

    def dead_mask(self) -> np.ndarray | None:
        if not len(self.dead):
            return None
        if self._dead_mask is None:
            self._dead_mask = np.isin(self.ids, self.dead)
        return self._dead_mask

    def live_positions(self) -> np.ndarray:
        mask = self.dead_mask()
        return np.arange(len(self.ids)) if mask is None else np.flatnonzero(~mask)

    def rows32(self, project: Project) -> np.ndarray:
        """Float32 rows in the index's space: FAISS's own storage for Flat, else projected once."""
        if self._rows32 is None:
            inner = faiss.downcast_index(self.index.index)
            if isinstance(inner, faiss.IndexFlat) and inner.ntotal:
                flat = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
                self._rows32 = flat.reshape(inner.ntotal, inner.d)  # a view; keeps no copy
            else:
                self._rows32 = project(np.asarray(self.vectors))
        return self._rows32

    def search(
        self, queries: np.ndarray, k: int, project: Project
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) over this segment's live rows: min(k, live) hits per query."""
        want = min(k, self.live)
        if want <= 0:
            return exact.empty(len(queries), 0)
        if self.flat:
            return exact.top_k(self.rows32(project), self.ids, queries, want, self.dead_mask())
        fetch = min(want + len(self.dead), self.index.ntotal)
        scores, ids = self.index.search(queries, fetch)
        if len(self.dead):
            ids = np.where(np.isin(ids, self.dead), -1, ids)
        scores, ids = exact.merge([(scores, ids)], len(queries), want)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):
            log.debug("ANN search of %s came back short for %d queries; exact", self.meta.name,
                      len(short))  # fmt: skip
            scores[short], ids[short] = exact.top_k(
                self.rows32(project), self.ids, queries[short], want, self.dead_mask()
            )
        return scores, ids


def write_segment(
    directory: Path, name: str, ids: np.ndarray, rows: RowSet, index: faiss.IndexIDMap2
) -> tuple[FileEntry, FileEntry, FileEntry, FileEntry | None]:
    """Write ids, float16 raw rows (streamed from ``rows``) and ``index`` durably; the entries
    of index, embeddings, ids and (when its IVF lists are on disk, ``ondisk``) lists."""
    lists_entry = None
    lists = ondisk.lists_of(index)
    if lists is not None:  # written and fsynced by the builder: it only takes its name here
        final = directory / mf.segment_file(name, "lists")
        ondisk.publish(lists, final)
        lists_entry = FileEntry.of(final)
    ids_path = durable_write(directory, mf.segment_file(name, "ids"), lambda sink: _save(sink, ids))
    emb_path = durable_write(
        directory, mf.segment_file(name, "embeddings"), lambda s: _write_rows(s, rows)
    )
    index_path = faiss_index.write_index(index, directory, mf.segment_file(name, "index"))
    return FileEntry.of(index_path), FileEntry.of(emb_path), FileEntry.of(ids_path), lists_entry


def write_deletes(directory: Path, name: str, generation: int, dead: np.ndarray) -> FileEntry:
    """A segment's tombstones as of ``generation``: a new small file, the old one stays as is."""
    path = durable_write(
        directory, mf.deletes_file(name, generation), lambda sink: _save(sink, dead)
    )
    return FileEntry.of(path)


def build_index(
    dim: int, factory: str, ids: np.ndarray, rows: RowSet, builder: IndexBuilder | None
) -> faiss.IndexIDMap2:
    """A filled index over ``rows`` (read in the index space), by ``builder`` or in-process."""
    if builder is not None:
        return builder(dim, factory, ids, rows)
    index = faiss_index.new_index(dim, factory)
    faiss_index.fill(index, ids, rows, factory)
    return index


def _save(sink: Sink, array: np.ndarray) -> None:
    np.save(sink, array, allow_pickle=False)


def _write_rows(sink: Sink, rows: RowSet) -> None:
    """Stream the raw rows into one float16 .npy (bounded memory).

    Plain writes, not a memory map: a full disk must raise, not kill the process (SIGBUS).
    """
    blocks = rows.raw_blocks()
    first = next(blocks, None)
    dim = first.shape[1] if first is not None else 0
    header = {"descr": "<f2", "fortran_order": False, "shape": (len(rows), dim)}
    np.lib.format.write_array_header_1_0(sink, header)
    for block in itertools.chain([first] if first is not None else [], blocks):
        sink.write(np.ascontiguousarray(block, "<f2").tobytes())

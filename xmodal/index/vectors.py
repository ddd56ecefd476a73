"""The vector side of a collection: the FAISS index plus the raw float16 embeddings and their ids.

A handle keeps the committed generation (index in memory, embeddings memory-mapped) and the rows
staged since, so that its own searches see both. Staged rows go straight into the in-memory FAISS
index when it is ready; an index whose factory needs training stays empty until commit, and until
then the staged rows are searched exactly with numpy. Index types that cannot remove ids (HNSW)
get removed ids filtered out of results and are rebuilt from the stored vectors at commit.

With a projection (``xmodal.index.projection``) the FAISS index holds projected rows of
``index_dim`` while the raw embeddings stay full-dimension; ``search`` and ``project`` take raw
queries and rows and map them into the index's space. Rows staged before the first projection is
fitted (the first commit) are searched in the full-dimension space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from xmodal.errors import CollectionCorruptError
from xmodal.index import faiss_index
from xmodal.index.durable import Sink, durable_write
from xmodal.index.manifest import generation_file
from xmodal.index.projection import Projection

log = logging.getLogger(__name__)
_COPY_ROWS = 65536

# (index dim, factory string, ids, float32 rows in the index's space) -> a filled id-mapped index.
IndexBuilder = Callable[[int, str, np.ndarray, np.ndarray], faiss.IndexIDMap2]


@dataclass(frozen=True)
class GenerationFiles:
    """Paths of one generation's vector files (the catalog is handled separately)."""

    index: Path
    embeddings: Path
    ids: Path
    projection: Path | None = None


class VectorStore:
    """FAISS index + raw embeddings of one generation, plus this handle's staged changes."""

    def __init__(self, dim: int | None, index_key: str) -> None:
        self.dim = dim
        self.index_key = index_key
        self.index: faiss.IndexIDMap2 | None = None
        self._ids = np.zeros(0, np.int64)
        self._vectors: np.ndarray = np.zeros((0, dim or 0), np.float16)
        # Staged (ids, float32 rows) batches, joined lazily: one concatenate per add would make
        # staging a million rows in small batches quadratic.
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_staged = 0
        self._removed: set[int] = set()  # committed ids removed by this handle
        self._unapplied: set[int] = set()  # removed ids the index could not drop
        self._stale = False  # the factory string changed: rebuild from the rows at commit
        self.builder: IndexBuilder | None = None  # how _rebuild fills an index; None: in-process
        self.projection: Projection | None = None
        if dim is not None:
            self.index = faiss_index.new_index(dim, index_key)

    @classmethod
    def load(cls, files: GenerationFiles, dim: int, index_key: str, count: int) -> VectorStore:
        """Open a committed generation; shapes must agree with each other and the manifest."""
        store = cls(None, index_key)
        store.dim = dim
        if files.projection is not None:
            store.projection = Projection.load(files.projection)
        store.index = faiss_index.read_index(files.index)
        store._ids = np.load(files.ids, allow_pickle=False)
        store._vectors = np.load(files.embeddings, mmap_mode="r", allow_pickle=False)
        shapes = (store.index.ntotal, len(store._ids), store._vectors.shape[0])
        kinds_ok = store._ids.dtype == np.int64 and store._vectors.dtype == np.float16
        layout_ok = store._ids.ndim == 1 and store._vectors.shape[1:] == (dim,)
        dims_ok = store.index.d == store.index_dim and store.projection_fits(dim)
        if not (kinds_ok and layout_ok and dims_ok and set(shapes) == {count}):
            raise CollectionCorruptError(
                f"collection files of {files.index.parent} disagree: manifest count {count} and "
                f"dim {dim}, index/ids/embeddings rows {shapes}; rebuild the collection"
            )
        return store

    @property
    def count(self) -> int:
        """Live rows: committed minus removed plus staged."""
        return len(self._ids) - len(self._removed) + self._n_staged

    @property
    def index_dim(self) -> int | None:
        """Dimension of the FAISS index: the projection's output, else the raw dimension."""
        return self.projection.out_dim if self.projection is not None else self.dim

    def projection_fits(self, dim: int) -> bool:
        return self.projection is None or self.projection.in_dim == dim

    def project(self, rows: np.ndarray) -> np.ndarray:
        """Raw rows -> the index's space (float32, contiguous); identity without projection."""
        if self.projection is None:
            return np.ascontiguousarray(rows, np.float32)
        return self.projection.transform(rows)

    def use_projection(self, projection: Projection | None) -> None:
        """Adopt another projection (None: none); the index is rebuilt from raw rows at commit."""
        if projection is not self.projection:
            self.projection = projection
            self._stale = self.index is not None

    def revert_projection(self, projection: Projection | None) -> None:
        """Undo ``use_projection`` after a failed commit, keeping the index searchable here."""
        self.use_projection(projection)
        if self.index is not None and self.index.d != self.index_dim:
            self._rebuild()
            self._stale = True  # still rebuild at the next commit (the factory may differ too)

    @property
    def dirty(self) -> bool:
        """True when this handle holds changes that commit must write."""
        return bool(self._n_staged or self._removed or self._stale)

    def use_factory(self, index_key: str) -> None:
        """Switch to another factory string; the index is rebuilt from the live rows at commit."""
        if index_key != self.index_key:
            self.index_key = index_key
            self._stale = self.index is not None

    def ensure_dim(self, dim: int) -> None:
        """Fix the dimension on first use and build the (empty) index for it."""
        if self.dim is None:
            self.dim = dim
            self.index = faiss_index.new_index(dim, self.index_key)
            self._vectors = np.zeros((0, dim), np.float16)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Stage rows (float32, validated by the caller) and make them searchable here."""
        assert self.index is not None  # ensure_dim ran first
        self._parts.append((ids, vectors))
        self._n_staged += len(ids)
        if self.index.is_trained:
            self.index.add_with_ids(self.project(vectors), ids)

    def remove(self, ids: np.ndarray) -> None:
        """Drop ids from committed and staged rows and from the index (or mark them filtered)."""
        if self.index is None or len(ids) == 0:
            return
        committed = ids[np.isin(ids, self._ids)]
        self._removed.update(int(i) for i in committed)
        if self._n_staged:
            staged_ids, staged = self._staged_rows()
            keep = ~np.isin(staged_ids, ids)
            self._parts = [(staged_ids[keep], staged[keep])]
            self._n_staged = int(keep.sum())
        if not faiss_index.try_remove(self.index, ids):
            self._unapplied.update(int(i) for i in ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per raw query; ids of -1 mark empty slots."""
        if self.index is None or self.count == 0:
            shape = (len(queries), 0)
            return np.zeros(shape, np.float32), np.zeros(shape, np.int64)
        queries = self.project(queries)
        if not self.index.is_trained:
            staged_ids, staged = self._staged_rows()
            return _brute_force(self.project(staged), staged_ids, queries, k)
        fetch = min(k + len(self._unapplied), self.index.ntotal)
        scores, ids = self.index.search(queries, fetch)
        if self._unapplied:
            scores, ids = _drop_ids(scores, ids, self._unapplied)
        return scores[:, :k], ids[:, :k]

    def raw_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float16 rows) of the live set; the committed memmap itself when nothing changed."""
        if not self.dirty:
            return self._ids, self._vectors
        keep = self._keep_mask()
        staged_ids, staged = self._staged_rows()
        ids = np.concatenate([self._ids[keep], staged_ids])
        vectors = np.concatenate([self._vectors[keep], staged.astype(np.float16)])
        return ids, vectors

    def write_generation(self, directory: Path, generation: int) -> GenerationFiles:
        """Write index, embeddings and ids of the live set as ``generation``, each durably."""
        assert self.index is not None and self.dim is not None
        if self._unapplied or self._stale or not self.index.is_trained:
            self._rebuild()
        keep = self._keep_mask()
        emb_name = generation_file("embeddings", generation)
        ids = np.concatenate([self._ids[keep], self._staged_rows()[0]])
        projection = None
        if self.projection is not None:
            name = generation_file("projection", generation)
            projection = durable_write(directory, name, self.projection.save)
        # Written smallest first, so that a size limit is met by the file that exceeds it.
        ids_path = durable_write(
            directory, generation_file("ids", generation), lambda sink: _save(sink, ids)
        )
        embeddings = durable_write(
            directory, emb_name, lambda sink: self._write_vectors(sink, keep)
        )
        index = faiss_index.write_index(self.index, directory, generation_file("index", generation))
        return GenerationFiles(index, embeddings, ids_path, projection)

    def rewrite_index(self, files: GenerationFiles, index_key: str) -> None:
        """Rebuild the index of a just-written, not yet published generation as ``index_key``."""
        self.use_factory(index_key)
        self._rebuild()
        faiss_index.write_index(self.index, files.index.parent, files.index.name)

    def switch_to(self, files: GenerationFiles) -> None:
        """Adopt a just-written generation as committed; the in-memory index already matches."""
        self._ids = np.load(files.ids, allow_pickle=False)
        self._vectors = np.load(files.embeddings, mmap_mode="r", allow_pickle=False)
        self._parts = []
        self._n_staged = 0
        self._removed.clear()

    def _write_vectors(self, sink: Sink, keep: np.ndarray) -> None:
        """Stream kept committed rows then staged rows into a float16 .npy (bounded memory).

        Plain writes, not a memory map: a full disk must raise, not kill the process (SIGBUS).
        """
        kept = np.flatnonzero(keep)
        staged = self._staged_rows()[1]
        total = len(kept) + len(staged)
        header = {"descr": "<f2", "fortran_order": False, "shape": (total, self.dim)}
        np.lib.format.write_array_header_1_0(sink, header)
        for start in range(0, len(kept), _COPY_ROWS):
            rows = kept[start : start + _COPY_ROWS]
            sink.write(np.ascontiguousarray(self._vectors[rows], "<f2").tobytes())
        sink.write(np.ascontiguousarray(staged, "<f2").tobytes())

    def _rebuild(self) -> None:
        """Build a fresh index from the live rows (training it when the factory needs that)."""
        assert self.dim is not None
        keep = self._keep_mask()
        staged_ids, staged = self._staged_rows()
        ids = np.concatenate([self._ids[keep], staged_ids])
        vectors = np.concatenate([self._vectors[keep].astype(np.float32), staged])
        log.info("rebuilding FAISS index %s over %d vectors", self.index_key, len(ids))
        dim, rows = self.index_dim or self.dim, self.project(vectors)
        if self.builder is not None:
            index = self.builder(dim, self.index_key, ids, rows)
        else:
            index = faiss_index.new_index(dim, self.index_key)
            faiss_index.fill(index, ids, rows, self.index_key)
        self.index = index  # only once built: a failed training keeps the previous index
        self._unapplied.clear()
        self._stale = False

    def _staged_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """All staged (ids, float32 rows) as two arrays, joined once and cached as one part."""
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros((0, self.dim or 0), np.float32)
        if len(self._parts) > 1:
            ids = np.concatenate([part[0] for part in self._parts])
            self._parts = [(ids, np.concatenate([part[1] for part in self._parts]))]
        return self._parts[0]

    def _keep_mask(self) -> np.ndarray:
        if not self._removed:
            return np.ones(len(self._ids), bool)
        return ~np.isin(self._ids, np.fromiter(self._removed, np.int64))


def _save(sink: Sink, array: np.ndarray) -> None:
    np.save(sink, array, allow_pickle=False)


def _brute_force(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, used while an index that needs training is still empty."""
    scores = queries @ vectors.T
    k = min(k, len(ids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), ids[top]


def _drop_ids(
    scores: np.ndarray, ids: np.ndarray, dropped: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Push dropped ids to the end of each row as -1 slots, keeping the order of the rest."""
    bad = np.isin(ids, np.fromiter(dropped, np.int64)) | (ids < 0)
    order = np.argsort(bad, axis=1, kind="stable")
    ids = np.where(bad, -1, ids)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

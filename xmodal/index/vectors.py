"""The vector side of a collection: its segments plus the rows and tombstones a handle staged.

Committed rows live in immutable segments (``xmodal.index.segments``); a writer's ``add`` stages
rows in memory and its ``remove`` stages tombstones, and its own searches see both: staged rows
are searched exactly with numpy. ``search`` projects the queries once (the projection is
collection-wide, so scores of all segments are comparable), takes the top-k of every segment and
of the staged rows and merges them.

With a projection (``xmodal.index.projection``) the segment indexes hold projected rows of
``index_dim`` while the raw embeddings stay full-dimension. Rows staged before the first
projection is fitted (the first commit) are searched in the full-dimension space.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from xmodal.index import exact
from xmodal.index.manifest import Manifest
from xmodal.index.projection import Projection
from xmodal.index.segments import IndexBuilder, LoadedSegment

log = logging.getLogger(__name__)

__all__ = ["IndexBuilder", "VectorStore"]


class VectorStore:
    """The segments of one generation, plus this handle's staged rows and tombstones."""

    def __init__(self, dim: int | None, projection: Projection | None = None) -> None:
        self.dim = dim
        self.projection = projection
        self.segments: list[LoadedSegment] = []
        # Staged (ids, float32 rows) batches, joined lazily: one concatenate per add would make
        # staging a million rows in small batches quadratic.
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_staged = 0
        self._n_killed = 0  # committed rows tombstoned by this handle
        self.builder: IndexBuilder | None = None  # how segment indexes are filled

    @classmethod
    def load(cls, directory: Path, manifest: Manifest) -> VectorStore:
        """Open the segments of a committed generation (files verified by the caller)."""
        projection = None
        if manifest.projection_file is not None:
            projection = Projection.load(directory / manifest.projection_file.name)
        store = cls(manifest.dim, projection)
        if (
            projection is not None
            and manifest.dim is not None
            and projection.in_dim != manifest.dim
        ):
            from xmodal.errors import CollectionCorruptError

            raise CollectionCorruptError(
                f"collection {directory}: the projection takes {projection.in_dim} dims but the "
                f"manifest says {manifest.dim}; rebuild the collection"
            )
        for meta in manifest.segments:
            assert manifest.dim is not None
            store.segments.append(
                LoadedSegment.load(directory, meta, manifest.dim, store.index_dim or manifest.dim)
            )
        return store

    @property
    def count(self) -> int:
        """Live rows: committed minus removed plus staged."""
        return sum(segment.live for segment in self.segments) + self._n_staged

    @property
    def index_dim(self) -> int | None:
        """Dimension of the segment indexes: the projection's output, else the raw dimension."""
        return self.projection.out_dim if self.projection is not None else self.dim

    @property
    def dirty(self) -> bool:
        """True when this handle holds changes that commit must write."""
        return bool(self._n_staged or self._n_killed)

    @property
    def n_staged(self) -> int:
        return self._n_staged

    def project(self, rows: np.ndarray) -> np.ndarray:
        """Raw rows -> the index's space (float32, contiguous); identity without projection."""
        if self.projection is None:
            return np.ascontiguousarray(rows, np.float32)
        return self.projection.transform(rows)

    def ensure_dim(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Stage rows (float32, validated by the caller); searchable in this handle at once."""
        self._parts.append((ids, vectors))
        self._n_staged += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        """Tombstone committed rows and drop staged ones."""
        if len(ids) == 0:
            return
        for segment in self.segments:
            self._n_killed += len(segment.kill(ids))
        if self._n_staged:
            staged_ids, staged = self.staged_rows()
            keep = ~np.isin(staged_ids, ids)
            self._parts = [(staged_ids[keep], staged[keep])]
            self._n_staged = int(keep.sum())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per raw query: min(k, count) hits; -1 ids mark empty slots."""
        want = min(k, self.count)
        if self.dim is None or want == 0:
            return exact.empty(len(queries), 0)
        queries = self.project(queries)
        results = [s.search(queries, want, self.project) for s in self.segments if s.live]
        if self._n_staged:
            staged_ids, staged = self.staged_rows()
            results.append(exact.top_k(self.project(staged), staged_ids, queries, want))
        return exact.merge(results, len(queries), want)

    def raw_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float16 rows) of the live set; a segment's memmap itself when that is all."""
        if self.dim is None:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float16)
        if len(self.segments) == 1 and not self._n_staged and not len(self.segments[0].dead):
            return self.segments[0].ids, self.segments[0].vectors
        ids, rows = [], []
        for segment in self.segments:
            keep = segment.live_positions()
            ids.append(segment.ids[keep])
            rows.append(segment.vectors[keep] if len(keep) < len(segment.ids) else segment.vectors)
        staged_ids, staged = self.staged_rows()
        ids.append(staged_ids)
        rows.append(staged.astype(np.float16))
        return np.concatenate(ids), np.concatenate([np.asarray(r) for r in rows])

    def staged_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """All staged (ids, float32 rows) as two arrays, joined once and cached as one part."""
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros((0, self.dim or 0), np.float32)
        if len(self._parts) > 1:
            ids = np.concatenate([part[0] for part in self._parts])
            self._parts = [(ids, np.concatenate([part[1] for part in self._parts]))]
        return self._parts[0]

    def staged_batches(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """All staged ids as one array and their float32 rows as the batches they came in: a
        commit reads them in place (joining a million staged rows would copy 2 GB)."""
        if not self._parts:
            return np.zeros(0, np.int64), []
        return np.concatenate([part[0] for part in self._parts]), [p[1] for p in self._parts]

    def adopt(self, segments: list[LoadedSegment], projection: Projection | None) -> None:
        """Switch to a just-committed generation: its segments, nothing staged."""
        self.segments = segments
        self.projection = projection
        self._parts = []
        self._n_staged = 0
        self._n_killed = 0

    def discard_staged(self) -> None:
        """Forget staged rows and tombstones."""
        for segment in self.segments:
            segment.revive_staged()
        self._parts, self._n_staged, self._n_killed = [], 0, 0

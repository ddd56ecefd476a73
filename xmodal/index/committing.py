"""What a commit writes for the vectors: new segments, new tombstone files, merged segments.

Everything here is written beside the current generation's files under names carrying the new
generation number and is listed only by the manifest that ``Collection.commit`` writes last, so a
crash at any point leaves the previous generation current (the next writer sweeps the orphans).

Three kinds of work, cheapest first:

- flush: the rows staged since the last commit become one new segment;
- tombstones: each segment that lost rows gets a new deletes file (its full sorted list);
- merges: ``merging.plan_merges`` on the live sizes picks segments to rewrite as one (bounded
  work per commit, amortised over the rows' lifetime); ``compact`` asks for more.

A reindex (the projection was refitted or the index key changed) rewrites every live row into
one segment: a new projection changes every coordinate anyway.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xmodal.index import autoindex, merging, segments
from xmodal.index.autoindex import IndexSettings
from xmodal.index.manifest import Segment, segment_name
from xmodal.index.rowset import Piece, RowSet
from xmodal.index.segments import LoadedSegment
from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)

Planner = Callable[[Sequence[int]], list[tuple[int, ...]]]


@dataclasses.dataclass
class _Namer:
    generation: int
    serial: int = 0

    def __call__(self) -> str:
        name = segment_name(self.generation, self.serial)
        self.serial += 1
        return name


def write_vectors(
    directory: Path,
    generation: int,
    store: VectorStore,
    settings: IndexSettings,
    *,
    reindex: bool = False,
    planner: Planner = merging.plan_merges,
) -> list[LoadedSegment]:
    """Write the vector files of ``generation``; returns its segments (the store is unchanged)."""
    name = _Namer(generation)
    staged_ids, staged = store.staged_batches()
    if reindex:
        sources = [*store.segments]
        current: list[LoadedSegment] = []
        merged = _merge(directory, name(), sources, store, settings, (staged_ids, staged))
        return [merged] if merged is not None else current
    current = [_with_tombstones(directory, generation, s) for s in store.segments]
    if len(staged_ids):
        rows = _rows(store, [Piece(batch) for batch in staged])
        built = autoindex.segment_index(settings, staged_ids, rows, store.builder)
        current.append(_write(directory, name(), staged_ids, rows, built))
    return merge_planned(directory, current, store, settings, planner, name)


def merge_planned(
    directory: Path,
    current: list[LoadedSegment],
    store: VectorStore,
    settings: IndexSettings,
    planner: Planner,
    name: Callable[[], str],
) -> list[LoadedSegment]:
    """Run the merges ``planner`` asks for on ``current``; the merged segment takes the place of
    the first of its members (segments stay ordered oldest first)."""
    merges = planner([segment.live for segment in current])
    if not merges:
        return current
    out: list[LoadedSegment | None] = list(current)
    for members in merges:
        log.info("merging segments %s", ", ".join(current[i].meta.name for i in members))
        merged = _merge(directory, name(), [current[i] for i in members], store, settings, None)
        for i in members:
            out[i] = None
        out[members[0]] = merged
    return [segment for segment in out if segment is not None]


def _with_tombstones(directory: Path, generation: int, segment: LoadedSegment) -> LoadedSegment:
    """The segment as the new generation lists it: a new deletes file if it lost rows."""
    if len(segment.dead) == len(segment.committed_dead):
        return segment
    entry = segments.write_deletes(directory, segment.meta.name, generation, segment.dead)
    meta = dataclasses.replace(segment.meta, deletes=entry, deleted=len(segment.dead))
    fresh = segment.with_meta(meta)
    fresh.committed_dead = fresh.dead = segment.dead
    return fresh


def _merge(
    directory: Path,
    name: str,
    members: list[LoadedSegment],
    store: VectorStore,
    settings: IndexSettings,
    staged: tuple[np.ndarray, list[np.ndarray]] | None,
) -> LoadedSegment | None:
    """One new segment holding the live rows of ``members`` (plus ``staged``); None if empty.

    The rows are read from the members' files block by block (``RowSet``), never joined: the
    memory a merge needs beyond the index it builds does not grow with the rows merged.
    """
    ids, pieces = [], []
    for segment in members:
        keep = segment.live_positions()
        whole = len(keep) == len(segment.ids)
        ids.append(segment.ids[keep])
        pieces.append(Piece(segment.vectors, None if whole else keep))
        segment.release_index()  # about to be replaced: its memory serves the new index
    if staged is not None and len(staged[0]):
        ids.append(staged[0])
        pieces += [Piece(batch) for batch in staged[1]]
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if not len(all_ids):
        return None
    rows = _rows(store, pieces)
    built = autoindex.segment_index(settings, all_ids, rows, store.builder)
    return _write(directory, name, all_ids, rows, built)


def _rows(store: VectorStore, pieces: list[Piece]) -> RowSet:
    assert store.index_dim is not None
    return RowSet(pieces, store.project, store.index_dim)


def _write(
    directory: Path, name: str, ids: np.ndarray, rows: RowSet, built: autoindex.SegmentIndex
) -> LoadedSegment:
    index_entry, emb_entry, ids_entry, lists_entry = segments.write_segment(
        directory, name, ids, rows, built.index
    )
    meta = Segment(
        name=name,
        count=len(ids),
        index=index_entry,
        embeddings=emb_entry,
        ids=ids_entry,
        index_factory=built.factory,
        index_kind=built.kind,
        index_reason=built.reason,
        search_params=dict(built.search_params),
        tuning=built.tuning,
        lists=lists_entry,
    )
    vectors = np.load(directory / emb_entry.name, mmap_mode="r", allow_pickle=False)
    return LoadedSegment(meta, ids, vectors, built.index, directory)

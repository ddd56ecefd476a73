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
    staged_ids, staged = store.staged_rows()
    if reindex:
        sources = [*store.segments]
        current: list[LoadedSegment] = []
        merged = _merge(directory, name(), sources, store, settings, (staged_ids, staged))
        return [merged] if merged is not None else current
    current = [_with_tombstones(directory, generation, s) for s in store.segments]
    if len(staged_ids):
        rows = store.project(staged)
        built = autoindex.segment_index(settings, staged_ids, rows, store.builder)
        current.append(_write(directory, name(), staged_ids, [staged], built, store))
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
    fresh = LoadedSegment(meta, segment.ids, segment.vectors, segment.index)
    fresh.committed_dead = fresh.dead = segment.dead
    return fresh


def _merge(
    directory: Path,
    name: str,
    members: list[LoadedSegment],
    store: VectorStore,
    settings: IndexSettings,
    staged: tuple[np.ndarray, np.ndarray] | None,
) -> LoadedSegment | None:
    """One new segment holding the live rows of ``members`` (plus ``staged``); None if empty."""
    ids, chunks = [], []
    for segment in members:
        keep = segment.live_positions()
        ids.append(segment.ids[keep])
        whole = len(keep) == len(segment.ids)
        chunks.append(segment.vectors if whole else np.asarray(segment.vectors[keep]))
    if staged is not None and len(staged[0]):
        ids.append(staged[0])
        chunks.append(staged[1])
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if not len(all_ids):
        return None
    rows = np.concatenate([store.project(np.asarray(chunk)) for chunk in chunks])
    built = autoindex.segment_index(settings, all_ids, rows, store.builder)
    return _write(directory, name, all_ids, chunks, built, store)


def _write(
    directory: Path,
    name: str,
    ids: np.ndarray,
    chunks: list[np.ndarray],
    built: autoindex.SegmentIndex,
    store: VectorStore,
) -> LoadedSegment:
    index_entry, emb_entry, ids_entry = segments.write_segment(
        directory, name, ids, chunks, built.index
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
    )
    vectors = np.load(directory / emb_entry.name, mmap_mode="r", allow_pickle=False)
    return LoadedSegment(meta, ids, vectors, built.index)

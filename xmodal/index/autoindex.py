"""Commit-time index management: choose, fill and tune the index of each new segment.

A collection's ``index_key`` is either a literal FAISS factory string or a managed key ("auto",
"flat", "hnsw", "ivf-flat", "ivf-pq") that ``choice.resolve`` turns into a factory string for each
segment a commit writes, from the segment's row count, the dimension and the memory budget: the
small segments every commit flushes are Flat (exact) under "auto", a merged segment large enough
gets an ANN index. Segments are immutable, so each is tuned once, when it is written: an ANN index
is tuned to TARGET_RECALL, and under "auto" one that is not faster than exact search is replaced
by Flat (``xmodal.index.speed``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from xmodal.index import choice, speed, tuning
from xmodal.index.rowset import RowSet
from xmodal.index.segments import IndexBuilder, build_index

log = logging.getLogger(__name__)

TUNING_K = 10
TARGET_RECALL = 0.95


@dataclass(frozen=True)
class IndexSettings:
    """What the collection asks of its indexes (the manifest's index_key and memory budget)."""

    index_key: str
    memory_budget: int | None = None


@dataclass(frozen=True)
class SegmentIndex:
    """A filled, tuned segment index and what the manifest records about it."""

    index: faiss.IndexIDMap2
    factory: str
    kind: str
    reason: str
    search_params: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None


def resolve(settings: IndexSettings, count: int, dim: int) -> choice.IndexChoice:
    """The index a segment of ``count`` rows of ``dim`` should have."""
    key = settings.index_key
    if not choice.is_managed(key):
        return choice.resolve(key, count, dim, None)
    budget = settings.memory_budget or choice.default_memory_budget()
    return choice.resolve(key, count, dim, budget)


def check_factory(dim: int, factory: str) -> None:
    """Raise CollectionError (saying what to use instead) unless FAISS can build ``factory``."""
    from xmodal.index import faiss_index

    faiss_index.new_index(dim, factory)


def segment_index(
    settings: IndexSettings, ids: np.ndarray, rows: RowSet, builder: IndexBuilder | None
) -> SegmentIndex:
    """Choose, fill and tune the index over ``rows`` (read in the index space) labelled ``ids``."""
    dim = rows.dim
    picked = resolve(settings, len(ids), dim)
    index = build_index(dim, picked.factory, ids, rows, builder)
    if picked.factory == "Flat" or tuning.tunable_parameter(index) is None:
        return SegmentIndex(index, picked.factory, picked.kind, picked.reason)
    result = tuning.tune_search(index, rows, ids, target_recall=TARGET_RECALL, k=TUNING_K)
    reason, measured = _exact_reason(index, picked, settings, result, rows)
    if reason is not None:
        log.info("keeping exact search instead of %s: %s", picked.factory, reason)
        del index  # its memory serves the Flat copy
        flat = build_index(dim, "Flat", ids, rows, None)
        record = _record(tuning.TuningResult(k=TUNING_K), len(ids), measured)
        return SegmentIndex(flat, "Flat", "flat", reason, {}, record)
    if not result.reached_target:  # only now: a warning about an index then dropped misleads
        log.warning(
            "%s could not reach recall@%d %.2f; best %.3f at %s",
            picked.factory,
            result.k,
            TARGET_RECALL,
            result.recall,
            result.params,
        )
    log.info("tuned %s over %d vectors: %s recall@10 %.3f", picked.factory, len(ids),
             result.params, result.recall)  # fmt: skip
    record = _record(result, len(ids), measured)
    return SegmentIndex(
        index, picked.factory, picked.kind, picked.reason, dict(result.params), record
    )


def _exact_reason(
    index: faiss.Index,
    picked: choice.IndexChoice,
    settings: IndexSettings,
    result: tuning.TuningResult,
    vectors: RowSet,
) -> tuple[str | None, speed.SpeedCheck | None]:
    """Measure (only where it can matter) and decide whether exact search should win; the
    reason (None: keep the ANN) and what was measured."""
    count, dim = int(index.ntotal), int(index.d)
    budget = settings.memory_budget or choice.default_memory_budget()
    decide = {
        "auto": settings.index_key == choice.AUTO,
        "factory": picked.factory,
        "flat_fits": choice.flat_bytes(count, dim) <= budget,
        "reached_target": result.reached_target,
    }
    measured = None
    if (
        decide["auto"]
        and decide["flat_fits"]
        and picked.factory != "Flat"
        and result.reached_target
    ):
        queries = tuning.sample_queries(vectors, speed.TIMING_QUERIES, seed=1)
        measured = speed.measure(index, vectors, queries, TUNING_K)
    return speed.exact_reason(**decide, speed=measured), measured


def _record(
    result: tuning.TuningResult, count: int, measured: speed.SpeedCheck | None
) -> dict[str, Any]:
    record = {
        "recall_at_10": result.recall,
        "sample_size": result.sample_size,
        "queries_per_s": result.queries_per_s,
        "target_recall": TARGET_RECALL,
        "reached_target": result.reached_target,
        "count": count,
    }
    if measured is not None:  # the speed check's medians, ms per query
        record |= {"ann_ms": round(measured.ann_ms, 4), "exact_ms": round(measured.exact_ms, 4),
                   "exact_rows_timed": measured.exact_rows_timed}  # fmt: skip
    return record

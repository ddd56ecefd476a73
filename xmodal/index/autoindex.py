"""Commit-time index management: resolve the collection's key, then tune and describe the index.

A collection's ``index_key`` is either a literal FAISS factory string or a managed key ("auto",
"flat", "hnsw", "ivf-flat", "ivf-pq") that ``choice.resolve`` turns into a factory string at every
commit, from the committed count, the dimension and the memory budget. The vector store rebuilds
its index from the stored raw embeddings when the factory string changes.

Tuning runs when the factory string changed, when nothing was tuned yet, or when the count moved by
more than RETUNE_DRIFT since the last tuning; otherwise the recorded parameters are re-applied.
Under "auto", an ANN index that is not faster than exact search is replaced by Flat
(``xmodal.index.speed``); ``exact_preferred`` remembers that until the count drifts again, so
later commits do not rebuild and re-measure the same ANN index.
The manifest fields written here are all optional (format_version stays 1): manifests without them
open as before, their ``index_key`` being the factory string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from xmodal.index import choice, faiss_index, speed, tuning
from xmodal.index.vectors import GenerationFiles

log = logging.getLogger(__name__)

TUNING_K = 10
TARGET_RECALL = 0.95
RETUNE_DRIFT = 0.1


def initial_fields(index_key: str, memory_budget: int | None) -> dict[str, Any]:
    """Manifest fields of an empty collection: managed keys start exact, as Flat."""
    factory = "Flat" if choice.is_managed(index_key) else index_key
    return {
        "index_key": index_key,
        "memory_budget": memory_budget,
        "index_factory": factory,
        "index_kind": choice.kind_of(factory),
        "search_params": {},
    }


def factory_of(manifest: dict[str, Any]) -> str:
    """The factory string the committed index was built with (old manifests: the key itself)."""
    return str(manifest.get("index_factory") or manifest["index_key"])


def resolve(manifest: dict[str, Any], count: int, dim: int | None) -> choice.IndexChoice:
    """The index the next generation should have, for ``count`` live rows of ``dim``."""
    key = str(manifest["index_key"])
    if not choice.is_managed(key):
        return choice.resolve(key, count, dim or 1, None)
    if dim is None:  # nothing added yet: keep what the empty collection was made with
        factory = factory_of(manifest)
        return choice.IndexChoice(factory, choice.kind_of(factory), 0, "empty collection")
    budget = manifest.get("memory_budget") or choice.default_memory_budget()
    picked = choice.resolve(key, count, dim, budget)
    kept = manifest.get("exact_preferred") or {}
    recent = _drift(count, kept.get("count")) <= RETUNE_DRIFT  # measured lately: not faster
    if key == choice.AUTO and kept.get("factory") == picked.factory and recent:
        return choice.IndexChoice("Flat", "flat", choice.flat_bytes(count, dim), kept["reason"])
    return picked


def check_factory(dim: int, factory: str) -> None:
    """Raise CollectionError (saying what to use instead) unless FAISS can build ``factory``."""
    faiss_index.new_index(dim, factory)


def tuned_fields(
    index: faiss.Index,
    picked: choice.IndexChoice,
    files: GenerationFiles,
    previous: dict[str, Any],
    *,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    retune: bool = False,
) -> dict[str, Any]:
    """Tune ``index`` (or re-apply the recorded params) and return the manifest fields.

    ``project`` maps the stored raw rows into the index's space (a projection); ``retune``
    forces tuning (the projection changed, so the recorded parameters no longer apply). Under
    "auto", a tuned ANN index that is not faster than exact search (``xmodal.index.speed``)
    gives way to Flat: the fields then name Flat and the caller rebuilds the index as Flat.
    """
    count = int(index.ntotal)
    last = previous.get("tuning") or {}
    same = factory_of(previous) == picked.factory and "tuning" in previous and not retune
    if same and _drift(count, last.get("count")) <= RETUNE_DRIFT:
        params = dict(previous.get("search_params") or {})
        tuning.apply_params(index, params)
        return _fields(picked, params, dict(last), files)
    ids = np.load(files.ids, allow_pickle=False)
    vectors = np.load(files.embeddings, mmap_mode="r", allow_pickle=False)
    if project is not None:
        vectors = project(vectors)
    result = tuning.tune_search(index, vectors, ids, target_recall=TARGET_RECALL, k=TUNING_K)
    reason = _exact_reason(index, picked, previous, result, vectors)
    if reason is not None:
        log.info("keeping exact search instead of %s: %s", picked.factory, reason)
        flat = choice.IndexChoice("Flat", "flat", choice.flat_bytes(count, index.d), reason)
        exact = _record(tuning.TuningResult(k=TUNING_K), count)
        kept = {"factory": picked.factory, "count": count, "reason": reason}
        return _fields(flat, {}, exact, files) | {"exact_preferred": kept}
    if (
        not result.reached_target
    ):  # only now: a warning about an index that is then dropped misleads
        log.warning(
            "%s could not reach recall@%d %.2f; best %.3f at %s",
            picked.factory,
            result.k,
            TARGET_RECALL,
            result.recall,
            result.params,
        )
    log.info("tuned %s over %d vectors: %s recall@10 %.3f", picked.factory, count,
             result.params, result.recall)  # fmt: skip
    fields = _fields(picked, dict(result.params), _record(result, count), files)
    return fields | {"exact_preferred": None}


def _exact_reason(
    index: faiss.Index,
    picked: choice.IndexChoice,
    manifest: dict[str, Any],
    result: tuning.TuningResult,
    vectors: np.ndarray,
) -> str | None:
    """Measure (only where it can matter) and decide whether exact search should win."""
    count, dim = int(index.ntotal), int(index.d)
    budget = manifest.get("memory_budget") or choice.default_memory_budget()
    decide = {
        "auto": manifest.get("index_key") == choice.AUTO,
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
    return speed.exact_reason(**decide, speed=measured)


def _record(result: tuning.TuningResult, count: int) -> dict[str, Any]:
    return {
        "recall_at_10": result.recall,
        "sample_size": result.sample_size,
        "queries_per_s": result.queries_per_s,
        "target_recall": TARGET_RECALL,
        "reached_target": result.reached_target,
        "count": count,
    }


def _fields(
    picked: choice.IndexChoice, params: dict, record: dict, files: GenerationFiles
) -> dict[str, Any]:
    return {
        "index_factory": picked.factory,
        "index_kind": picked.kind,
        "index_reason": picked.reason,
        "search_params": params,
        "tuning": record,
        "index_bytes": files.index.stat().st_size,
    }


def _drift(count: int, last: int | None) -> float:
    """Relative change of the row count since ``last`` (a missing record counts as 0)."""
    last = int(last or 0)
    return abs(count - last) / max(last, 1)

"""Commit-time index management: resolve the collection's key, then tune and describe the index.

A collection's ``index_key`` is either a literal FAISS factory string or a managed key ("auto",
"flat", "hnsw", "ivf-flat", "ivf-pq") that ``choice.resolve`` turns into a factory string at every
commit, from the committed count, the dimension and the memory budget. The vector store rebuilds
its index from the stored raw embeddings when the factory string changes.

Tuning runs when the factory string changed, when nothing was tuned yet, or when the count moved by
more than RETUNE_DRIFT since the last tuning; otherwise the recorded parameters are re-applied.
The manifest fields written here are all optional (format_version stays 1): manifests without them
open as before, their ``index_key`` being the factory string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from xmodal.index import choice, faiss_index, tuning
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
    return choice.resolve(key, count, dim, budget)


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
    forces tuning (the projection changed, so the recorded parameters no longer apply).
    """
    count = int(index.ntotal)
    last = previous.get("tuning") or {}
    same = factory_of(previous) == picked.factory and "tuning" in previous and not retune
    drift = abs(count - int(last.get("count", 0))) / max(int(last.get("count", 0)), 1)
    if same and drift <= RETUNE_DRIFT:
        params = dict(previous.get("search_params") or {})
        tuning.apply_params(index, params)
        record = dict(last)
    else:
        ids = np.load(files.ids, allow_pickle=False)
        vectors = np.load(files.embeddings, mmap_mode="r", allow_pickle=False)
        if project is not None:
            vectors = project(vectors)
        result = tuning.tune_search(index, vectors, ids, target_recall=TARGET_RECALL, k=TUNING_K)
        params = dict(result.params)
        record = {
            "recall_at_10": result.recall,
            "sample_size": result.sample_size,
            "queries_per_s": result.queries_per_s,
            "target_recall": TARGET_RECALL,
            "reached_target": result.reached_target,
            "count": count,
        }
        log.info(
            "tuned %s over %d vectors: %s recall@10 %.3f",
            picked.factory,
            count,
            params,
            result.recall,
        )
    return {
        "index_factory": picked.factory,
        "index_kind": picked.kind,
        "index_reason": picked.reason,
        "search_params": params,
        "tuning": record,
        "index_bytes": files.index.stat().st_size,
    }

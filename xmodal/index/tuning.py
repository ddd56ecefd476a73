"""Search-time tuning: the smallest nprobe / efSearch whose measured recall@k meets a target.

Queries are a seeded sample of the stored vectors, each perturbed by isotropic noise of norm
``QUERY_NOISE`` and re-normalised, so a query is near but not on its source row (a stored row as
its own query would flatter the index). Ground truth is numpy brute force over every stored
vector. The parameter grows geometrically (x2) until the recall reaches the target or the cap; at
the cap the best recall reached is returned with ``reached_target`` False. A doubling that gains
less than PLATEAU_GAIN also ends the search, below target: what limits recall then is the codes
(PQ rounds every row), not how many lists or graph nodes are visited, and each further doubling
costs twice the last (at nprobe = nlist a PQ index scans every code for every query).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import faiss
import numpy as np

from xmodal.index import exact

log = logging.getLogger(__name__)

QUERY_NOISE = 0.3
DEFAULT_SAMPLE = 1000
EF_SEARCH_CAP = 4096
PLATEAU_GAIN = 0.002
_GT_ROWS = 16384  # brute-force ground truth in blocks of stored rows: bounded memory


@dataclass(frozen=True)
class TuningResult:
    """Chosen search parameters and what they measured on the sample queries."""

    params: dict[str, int] = field(default_factory=dict)
    recall: float = 1.0
    k: int = 10
    sample_size: int = 0
    queries_per_s: float | None = None
    reached_target: bool = True


def tunable_parameter(index: faiss.Index) -> str | None:
    """ "nprobe" for IVF indexes, "efSearch" for HNSW, None for exact ones."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return "efSearch" if hasattr(inner, "hnsw") else None


def apply_params(index: faiss.Index, params: Mapping[str, int]) -> None:
    """Set search parameters (e.g. from a manifest) on a loaded index, through any id map."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, float(value))


def tune_search(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> TuningResult:
    """Tune ``index`` (holding ``vectors`` under ``ids``) for recall@k; leaves the params set."""
    name = tunable_parameter(index)
    if name is None or index.ntotal == 0:
        return TuningResult(k=k)
    queries = sample_queries(vectors, sample_size, seed)
    k = min(k, len(ids))
    truth = exact_top_k(vectors, ids, queries, k)
    best: TuningResult | None = None
    previous: float | None = None
    for value in _grid(index, name, k):
        apply_params(index, {name: value})
        start = time.perf_counter()
        _, found = index.search(queries, k)
        qps = len(queries) / max(time.perf_counter() - start, 1e-9)
        result = TuningResult({name: value}, recall_at_k(found, truth), k, len(queries), qps)
        if best is None or result.recall > best.recall + 1e-9:
            best = result
        if result.recall >= target_recall:
            return result
        if previous is not None and result.recall - previous < PLATEAU_GAIN:
            log.info("recall@%d stopped growing at %s=%d (%.3f)", k, name, value, result.recall)
            break
        previous = result.recall
    assert best is not None  # the grid is never empty
    # No warning here: the caller decides whether this index is kept (see autoindex) and warns
    # only about an index it keeps.
    apply_params(index, best.params)
    return TuningResult(best.params, best.recall, k, best.sample_size, best.queries_per_s, False)


def sample_queries(vectors: np.ndarray, sample_size: int, seed: int) -> np.ndarray:
    """Seeded stored rows, nudged off themselves by noise of norm QUERY_NOISE, re-normalised."""
    rng = np.random.default_rng(seed)
    count = min(sample_size, len(vectors))
    rows = np.sort(rng.choice(len(vectors), size=count, replace=False))
    base = np.asarray(vectors[rows], dtype=np.float32)
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = base + noise
    return np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))


def exact_top_k(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact inner-product top-k per query: ``exact.top_k`` over blocks of stored
    rows, merged as it goes (memory: one block of rows and one block of scores)."""
    best = exact.empty(len(queries), 0)
    for start in range(0, len(vectors), _GT_ROWS):
        block = np.asarray(vectors[start : start + _GT_ROWS], dtype=np.float32)
        found = exact.top_k(block, ids[start : start + len(block)], queries, k)
        best = exact.merge([best, found], len(queries), k)
    return best[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k ids that the index returned."""
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def _grid(index: faiss.Index, name: str, k: int) -> list[int]:
    """Geometric values to try: nprobe 1..nlist, efSearch max(k, 16)..EF_SEARCH_CAP."""
    if name == "nprobe":
        first, cap = 1, faiss.try_extract_index_ivf(index).nlist
    else:
        first, cap = max(k, 16), EF_SEARCH_CAP
    values = [first]
    while values[-1] < cap:
        values.append(min(values[-1] * 2, cap))
    return values

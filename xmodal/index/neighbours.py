"""All-pairs similarity work over stored raw rows in bounded memory: pairs above a threshold and
each row's k nearest neighbours, exact or SemDeDup-style clustered.

Rows are the collection's raw float16 embeddings (a memmap); only the ones being compared are
gathered, as float32 re-normalised to unit length, so every score is a true cosine.

- **Exact** (``clusters == 1``): every row against every row, a block of query rows at a time;
  one block's score matrix is at most ``block_bytes``.
- **Clustered** (Abbas et al., 2023, "SemDeDup"): spherical k-means into ``clusters`` centroids
  (about sqrt(n)), each row stored in the list of its nearest centroid and compared with the rows
  of the lists of its ``probes`` nearest centroids (the IVF search pattern, with BLAS products in
  place of per-vector scans). Cost ~ n * probes * (n / clusters) * d instead of n^2 * d; a pair is
  missed only when neither row's probes reach the other's list, which near-duplicates (cosine
  close to 1, so nearly the same nearest centroid) rarely do. ``benchmarks/duplicates.py``
  measures what it misses.

Memory is O(block_bytes + largest list * d + n * (probes + k)), never O(n^2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_MAX = 20_000
BLOCK_BYTES = 32 << 20
_ASSIGN_ROWS = 32_768
_TRAIN_PER_CLUSTER = 64


@dataclass(frozen=True, slots=True)
class NeighbourPlan:
    """How to compare n rows: ``clusters == 1`` is exact; else clustered with ``probes``."""

    clusters: int = 1
    probes: int = 1
    block_bytes: int = BLOCK_BYTES
    seed: int = 0

    @property
    def exact(self) -> bool:
        return self.clusters == 1


def plan_neighbours(n: int, probes: int = 2, exact_max: int = EXACT_MAX) -> NeighbourPlan:
    """Exact up to ``exact_max`` rows, clustered above.

    Why these numbers: exact costs n^2 * d multiply-adds, about 2e11 at 20k rows of 512-d,
    seconds on one laptop core; at 1M rows it is 5e14 (hours). sqrt(n) clusters balance the
    two clustered costs, assigning rows to centroids (n * clusters * d) and comparing within lists
    (n * probes * n / clusters * d), as in SemDeDup.
    """
    if n <= exact_max:
        return NeighbourPlan()
    clusters = max(2, round(n**0.5))
    return NeighbourPlan(clusters=clusters, probes=max(1, min(probes, clusters)))


def gather(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """float32 unit rows at ``positions`` (sorted reads are kind to a memmap)."""
    order = np.argsort(positions, kind="stable")
    out = np.empty((len(positions), rows.shape[1]), np.float32)
    out[order] = rows[positions[order]]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


@dataclass(frozen=True)
class _Lists:
    """CSR lists of local row numbers: stored (by nearest centroid) and probing (by probes)."""

    stored: np.ndarray
    stored_bounds: np.ndarray
    probing: np.ndarray
    probing_bounds: np.ndarray


def _partition(rows: np.ndarray, positions: np.ndarray, plan: NeighbourPlan) -> _Lists:
    n, d = len(positions), rows.shape[1]
    if plan.exact:
        everyone = np.arange(n, dtype=np.int64)
        bounds = np.array([0, n], np.int64)
        return _Lists(everyone, bounds, everyone, bounds)
    rng = np.random.default_rng(plan.seed)
    sample = min(n, plan.clusters * _TRAIN_PER_CLUSTER)
    train = gather(rows, positions[np.sort(rng.choice(n, sample, replace=False))])
    kmeans = faiss.Kmeans(
        d,
        plan.clusters,
        niter=10,
        seed=plan.seed,
        spherical=True,
        max_points_per_centroid=_TRAIN_PER_CLUSTER,
        min_points_per_centroid=1,
    )
    kmeans.train(train)
    del train
    centroids = faiss.IndexFlatIP(d)
    centroids.add(kmeans.centroids)
    nearest = np.empty((n, plan.probes), np.int64)
    for start in range(0, n, _ASSIGN_ROWS):
        block = gather(rows, positions[start : start + _ASSIGN_ROWS])
        nearest[start : start + len(block)] = centroids.search(block, plan.probes)[1]
    stored = np.argsort(nearest[:, 0], kind="stable")
    stored_bounds = np.searchsorted(nearest[stored, 0], np.arange(plan.clusters + 1))
    flat = nearest.ravel()
    order = np.argsort(flat, kind="stable")
    probing = order // plan.probes
    probing_bounds = np.searchsorted(flat[order], np.arange(plan.clusters + 1))
    log.debug(
        "partitioned %d rows into %d lists (largest %d)",
        n,
        plan.clusters,
        int(np.diff(stored_bounds).max()),
    )
    return _Lists(stored, stored_bounds, probing, probing_bounds)


def row_blocks(
    rows: np.ndarray, positions: np.ndarray, plan: NeighbourPlan, *, upper: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(query rows, their vectors, candidate rows, their vectors): what to compare, block by block.

    Rows are numbered locally (into ``positions``). Every row is a query once per probe; its
    candidates are the rows stored in the probed lists. ``upper`` (exact plans only) skips
    candidates before the block, for symmetric work. A query block times its candidates is at
    most ``plan.block_bytes`` of float32 scores.
    """
    lists = _partition(rows, positions, plan)
    for c in range(len(lists.stored_bounds) - 1):
        stored = lists.stored[lists.stored_bounds[c] : lists.stored_bounds[c + 1]]
        queries = lists.probing[lists.probing_bounds[c] : lists.probing_bounds[c + 1]]
        if not len(stored) or not len(queries):
            continue
        candidates = gather(rows, positions[stored])
        step = max(1, min(len(queries), plan.block_bytes // (4 * len(stored))))
        for start in range(0, len(queries), step):
            local = queries[start : start + step]
            first = start if upper and plan.exact else 0
            # Exact plans query the candidate rows themselves: no second read.
            block = (
                candidates[start : start + step] if plan.exact else gather(rows, positions[local])
            )
            yield local, block, stored[first:], candidates[first:]


def pairs_at_least(
    rows: np.ndarray, positions: np.ndarray, threshold: float, plan: NeighbourPlan
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks of (a, b, cosine) local row pairs, a != b, with cosine >= ``threshold``.

    A pair may come back twice (once from each side); callers that union sets do not mind.
    """
    for queries, block, candidates, vectors in row_blocks(rows, positions, plan, upper=True):
        scores = block @ vectors.T
        qi, ci = np.nonzero(scores >= threshold)
        a, b = queries[qi], candidates[ci]
        other = a != b
        if other.any():
            yield a[other], b[other], scores[qi[other], ci[other]]


def nearest_neighbours(
    rows: np.ndarray, positions: np.ndarray, k: int, plan: NeighbourPlan
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best other rows (k < n): (cosines, local rows), best first.

    A row whose probed lists held fewer than ``k`` other rows is searched again exactly, so
    every row gets ``k`` neighbours.
    """
    n = len(positions)
    best = np.full((n, k), -np.inf, np.float32)
    found = np.full((n, k), -1, np.int64)
    for queries, block, candidates, vectors in row_blocks(rows, positions, plan):
        _merge(best, found, queries, candidates, block, vectors)
    short = np.flatnonzero((found < 0).any(axis=1))
    if len(short):
        log.debug("%d rows found fewer than %d neighbours in their lists; exact", len(short), k)
        _exact_rows(rows, positions, short, best, found, plan.block_bytes)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(found, order, axis=1)


def _merge(
    best: np.ndarray,
    found: np.ndarray,
    queries: np.ndarray,
    candidates: np.ndarray,
    block: np.ndarray,
    vectors: np.ndarray,
) -> None:
    """Fold the top-k of ``block`` against ``vectors`` into the running top-k of ``queries``."""
    k = best.shape[1]
    # One more than k: the query itself may be among the candidates (FAISS: BLAS + heaps).
    scores, at = faiss.knn(block, vectors, min(k + 1, len(vectors)), faiss.METRIC_INNER_PRODUCT)
    ids = candidates[at]
    scores[ids == queries[:, None]] = -np.inf  # never one's own neighbour
    merged_scores = np.concatenate([best[queries], scores], axis=1)
    merged_ids = np.concatenate([found[queries], ids], axis=1)
    top = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
    best[queries] = np.take_along_axis(merged_scores, top, axis=1)
    found[queries] = np.where(
        np.isfinite(best[queries]), np.take_along_axis(merged_ids, top, axis=1), -1
    )


def _exact_rows(
    rows: np.ndarray,
    positions: np.ndarray,
    queries: np.ndarray,
    best: np.ndarray,
    found: np.ndarray,
    block_bytes: int,
) -> None:
    """Redo the top-k of ``queries`` against every row, a slab of candidates at a time."""
    best[queries], found[queries] = -np.inf, -1
    n = len(positions)
    for q_start in range(0, len(queries), 1024):
        local = queries[q_start : q_start + 1024]
        block = gather(rows, positions[local])
        step = max(1, block_bytes // (4 * len(local)))
        for start in range(0, n, step):
            candidates = np.arange(start, min(n, start + step), dtype=np.int64)
            _merge(best, found, local, candidates, block, gather(rows, positions[candidates]))

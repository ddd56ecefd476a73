"""Top-k search over every live row or an allowed set of ids (the ids a filter let through).

Searches run per segment and are merged (``xmodal.index.exact.merge``); queries are projected
once. Per segment, a small allowed set (at most ``EXACT_MAX`` of its ids, or under
``EXACT_FRACTION`` of its rows) and any Flat segment are searched exactly with numpy: an ANN index
asked for "the best k among these few" would visit mostly excluded vectors and could come back
short. A large set in an ANN segment is searched by FAISS with an ``IDSelectorBatch`` (passed
through ``IndexIDMap2``, which translates it to the inner index's positions), using search
parameters of the inner index's own type so its nprobe / efSearch stay as tuned. A query whose
ANN answer comes back short while enough allowed ids exist is answered exactly, so a filter never
costs hits that exist. Tombstoned ids are never allowed.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from xmodal.index import exact
from xmodal.index.segments import LoadedSegment
from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)
EXACT_MAX = 4096
EXACT_FRACTION = 0.05


def search_all(store: VectorStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per raw query over every live row: min(k, count) hits each.

    Each segment answers min(k, its live rows) (an ANN answer that comes back short is answered
    exactly over that segment's rows), so the merge never costs hits that exist.
    """
    return store.search(queries, k)


def search_subset(
    store: VectorStore, queries: np.ndarray, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query among ``allowed`` ids; -1 ids mark empty slots."""
    allowed = np.unique(np.asarray(allowed, np.int64))
    n = len(queries)
    if len(allowed) == 0 or store.dim is None or store.count == 0:
        return exact.empty(n, 0)
    queries = store.project(queries)
    results, total = [], 0
    for segment in store.segments:
        mask = np.isin(segment.ids, allowed)
        dead = segment.dead_mask()
        if dead is not None:
            mask &= ~dead
        if mask.any():
            total += int(mask.sum())
            results.append(_segment_subset(segment, store, queries, mask, k))
    staged_ids, staged = store.staged_rows()
    keep = np.isin(staged_ids, allowed)
    if keep.any():
        total += int(keep.sum())
        results.append(exact.top_k(store.project(staged[keep]), staged_ids[keep], queries, k))
    return exact.merge(results, n, min(k, total))


def _segment_subset(
    segment: LoadedSegment, store: VectorStore, queries: np.ndarray, mask: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k among the rows of ``segment`` selected by ``mask`` (allowed and live)."""
    positions = np.flatnonzero(mask)
    want = min(k, len(positions))
    small = len(positions) <= EXACT_MAX or len(positions) < EXACT_FRACTION * len(segment.ids)
    if segment.flat or small:
        if segment.flat and not small:  # the whole block, masked: no copy of the rows
            return exact.top_k(segment.rows32(store.project), segment.ids, queries, want, ~mask)
        rows = segment.rows32(store.project)[positions]
        return exact.top_k(rows, segment.ids[positions], queries, want)
    scores, ids = _faiss_selected(segment.index, queries, segment.ids[positions], want)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short):
        log.debug("filtered ANN search came back short for %d queries; exact", len(short))
        rows = segment.rows32(store.project)[positions]
        scores[short], ids[short] = exact.top_k(rows, segment.ids[positions], queries[short], want)
    return scores, ids


def _faiss_selected(
    index: faiss.IndexIDMap2, queries: np.ndarray, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search with a selector; falls back to deeper unfiltered search + post-filter."""
    selector = faiss.IDSelectorBatch(allowed)
    params = _params_for(index, selector)
    if params is not None:
        try:
            scores, ids = index.search(np.ascontiguousarray(queries), k, params=params)
            return scores, ids
        except RuntimeError as exc:  # an index type that rejects selectors
            log.debug("FAISS selector search refused (%s); post-filtering instead", exc)
    return _post_filtered(index, queries, allowed, k)


def _params_for(index: faiss.IndexIDMap2, selector: faiss.IDSelector) -> object | None:
    """Search parameters of the inner index's type carrying ``selector`` (None: unknown type)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexPreTransform):
        return None  # its chain re-wraps parameters per sub-index; post-filter instead
    ivf = faiss.try_extract_index_ivf(inner) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
    if isinstance(inner, faiss.IndexFlat | faiss.IndexScalarQuantizer | faiss.IndexPQ):
        return faiss.SearchParameters(sel=selector)
    return None


def _post_filtered(
    index: faiss.IndexIDMap2, queries: np.ndarray, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Search ever deeper until every row holds ``k`` allowed ids or the index is exhausted."""
    fetch = min(index.ntotal, max(4 * k, 64))
    while True:
        scores, ids = index.search(np.ascontiguousarray(queries), fetch)
        ok = np.isin(ids, allowed)
        if ok.sum(axis=1).min() >= k or fetch >= index.ntotal:
            break
        fetch = min(index.ntotal, fetch * 4)
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(ok, order, axis=1)
    return (
        np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32),
        np.where(kept, np.take_along_axis(ids, order, axis=1), -1),
    )

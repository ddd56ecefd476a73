"""Top-k search over every live row or an allowed set of ids (the ids a filter let through).

A small allowed set (at most ``EXACT_MAX`` ids, or under ``EXACT_FRACTION`` of the collection) is
searched exactly with numpy over its stored raw embeddings: an ANN index asked for "the best k
among these few" would visit mostly excluded vectors and could come back short. A large set is
searched by FAISS with an ``IDSelectorBatch`` (passed through ``IndexIDMap2``, which translates
it to the inner index's positions), using search parameters of the inner index's own type so its
nprobe / efSearch stay as tuned. A query whose ANN answer comes back short while enough allowed
ids exist is answered exactly, so a filter never costs hits that exist.

Queries arrive raw (encoder dimension); with a projection both they and the stored rows searched
exactly are projected first, so exact and FAISS answers live in the same space.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)
EXACT_MAX = 4096
EXACT_FRACTION = 0.05
_QUERY_BLOCK = 256


def search_subset(
    store: VectorStore, queries: np.ndarray, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query among ``allowed`` ids; -1 ids mark empty slots."""
    allowed = np.unique(np.asarray(allowed, np.int64))
    n = len(queries)
    if len(allowed) == 0 or store.index is None or store.count == 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    queries = store.project(queries)
    k = min(k, len(allowed))
    small = len(allowed) <= EXACT_MAX or len(allowed) < EXACT_FRACTION * store.count
    if small or not store.index.is_trained:
        return exact(store, queries, allowed, k)
    scores, ids = _faiss_selected(store.index, queries, allowed, k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short):
        log.debug("filtered ANN search came back short for %d queries; exact", len(short))
        scores[short], ids[short] = exact(store, queries[short], allowed, k)
    return scores, ids


def search_all(store: VectorStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per raw query over every live row: min(k, count) hits each.

    An ANN index may come back short (an HNSW graph whose search reaches only part of the rows,
    IVF probing fewer lists than hold k rows, removed ids filtered out): those queries are
    answered exactly over the stored rows, so a search never costs hits that exist.
    """
    scores, ids = store.search(queries, k)
    want = min(k, store.count)
    out_scores = np.full((len(queries), want), -np.inf, np.float32)
    out_ids = np.full((len(queries), want), -1, np.int64)
    width = min(want, ids.shape[1])
    out_scores[:, :width], out_ids[:, :width] = scores[:, :width], ids[:, :width]
    short = np.flatnonzero((out_ids < 0).any(axis=1))
    if len(short):
        log.debug("ANN search came back short for %d queries; exact", len(short))
        projected = store.project(queries[short])
        out_scores[short], out_ids[short] = exact(store, projected, None, want)
    return out_scores, out_ids


def exact(
    store: VectorStore, queries: np.ndarray, allowed: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the stored embeddings of ``allowed`` ids (None: all).

    ``queries`` are already in the index's space; the stored raw rows are projected here.
    """
    all_ids, rows = store.raw_embeddings()
    if allowed is None:
        ids, vectors = all_ids, store.project(rows)
    else:
        positions = np.flatnonzero(np.isin(all_ids, allowed))
        ids, vectors = all_ids[positions], store.project(rows[positions])
    k = min(k, len(ids))
    out_scores = np.full((len(queries), k), -np.inf, np.float32)
    out_ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[start : start + _QUERY_BLOCK] @ vectors.T
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < len(ids) else None
        if top is None:
            top = np.broadcast_to(np.arange(len(ids)), block.shape).copy()
        part = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_scores[start : start + len(block)] = np.take_along_axis(block, top, axis=1)
        out_ids[start : start + len(block)] = ids[top]
    return out_scores, out_ids


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

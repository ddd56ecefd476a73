"""The ANN index a collection would build over a gallery, and its recall/speed curve.

``build_index`` follows the collection's commit path: the key ("auto", "flat", "hnsw",
"ivf-flat", "ivf-pq" or a FAISS factory string) is resolved by ``xmodal.index.choice`` for the
gallery's size and the memory budget, built by ``faiss_index``, and tuned by ``tuning`` to the
collection's target recall. ``curve`` then walks the same parameter (nprobe / efSearch) over
powers of two and measures each setting on the real queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from xmodal.index import autoindex, choice, faiss_index, tuning
from xmodal.pipelines.evaluation.recall import Pairing, Search, recall_at, searched_ranks

EF_CURVE_CAP = 1024
CURVE_DONE = 0.999


@dataclass(frozen=True)
class CurvePoint:
    """One search setting: its recall@10 vs exact, recall@10 of the task, and queries/s."""

    param: str
    value: int
    vs_exact: float
    recall_at_10: float
    queries_per_s: float


@dataclass(frozen=True, eq=False)
class BuiltIndex:
    """A filled, tuned, id-mapped FAISS index over gallery rows 0..n-1."""

    key: str
    factory: str
    kind: str
    reason: str
    index: faiss.Index
    params: dict
    tuned_recall: float

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(inner products, row numbers), best first; -1 where fewer than k rows were found."""
        return self.index.search(np.ascontiguousarray(queries, np.float32), k)


def build_index(gallery: np.ndarray, key: str, memory_budget: int | None = None) -> BuiltIndex:
    """Resolve ``key`` as a collection does, build it over ``gallery`` and tune it."""
    rows = np.ascontiguousarray(gallery, np.float32)
    n, dim = rows.shape
    budget = memory_budget or choice.default_memory_budget()
    picked = choice.resolve(key, n, dim, budget)
    index = faiss_index.new_index(dim, picked.factory)
    ids = np.arange(n, dtype=np.int64)
    faiss_index.fill(index, ids, rows, picked.factory)
    tuned = tuning.tune_search(
        index, rows, ids, target_recall=autoindex.TARGET_RECALL, k=autoindex.TUNING_K
    )
    return BuiltIndex(
        key, picked.factory, picked.kind, picked.reason, index, dict(tuned.params), tuned.recall
    )


def describe(built: BuiltIndex) -> str:
    """ "auto -> HNSW32 efSearch=64" style label."""
    settings = " ".join(f"{name}={value}" for name, value in built.params.items())
    head = built.factory if built.key == built.factory else f"{built.key} -> {built.factory}"
    return f"{head} {settings}".strip()


def bytes_per_vector(built: BuiltIndex) -> float:
    """Serialised index size (codes, graph or lists, id map) divided by its rows."""
    return len(faiss.serialize_index(built.index)) / max(built.index.ntotal, 1)


def curve(
    built: BuiltIndex, queries: np.ndarray, truth: np.ndarray, pairing: Pairing
) -> tuple[CurvePoint, ...]:
    """Recall and speed at each power-of-two setting of the search parameter, up to exact."""
    name = tuning.tunable_parameter(built.index)
    if name is None:
        return ()
    points: list[CurvePoint] = []
    for value in _values(built.index, name):
        tuning.apply_params(built.index, {name: value})
        depth = truth.shape[1]
        ranks, _, found = searched_ranks(
            built.search, queries, depth, pairing, built.index.ntotal, 10
        )
        qps = timed_qps(built.search, queries, depth)
        r10 = recall_at(ranks, (10,))[10]
        points.append(CurvePoint(name, value, tuning.recall_at_k(found, truth), r10, qps))
        if points[-1].vs_exact >= CURVE_DONE:
            break  # as good as exact: larger settings only cost speed
    tuning.apply_params(built.index, built.params)  # leave it as tuned
    return tuple(points)


def _values(index: faiss.Index, name: str) -> list[int]:
    """nprobe 1..nlist or efSearch 16..EF_CURVE_CAP, doubling."""
    if name == "nprobe":
        first, cap = 1, faiss.try_extract_index_ivf(index).nlist
    else:
        first, cap = 16, EF_CURVE_CAP
    values = [first]
    while values[-1] < cap:
        values.append(min(values[-1] * 2, cap))
    return values


def timed_qps(search: Search, queries: np.ndarray, k: int, min_seconds: float = 0.1) -> float:
    """Queries/s of batched ``search`` calls on one thread: the best of repeats.

    One thread because OpenMP threads spin and stall on small batches when the cores are shared,
    which made multi-threaded timings of the same search vary a hundredfold.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    best, spent = float("inf"), 0.0
    try:
        while spent < min_seconds:
            start = time.perf_counter()
            search(queries, k)
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
    finally:
        faiss.omp_set_num_threads(threads)
    return len(queries) / max(best, 1e-9)

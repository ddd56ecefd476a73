"""Measuring one FAISS index for ``search.py``: build, size, tune, single-thread QPS; PCA recall.

Builds use FAISS threads = all cores; query timing uses one thread and one query per call (see
the ``search.py`` docstring for the whole method).
"""

from __future__ import annotations

import gc
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _mixture import CHUNK

from xmodal.index.faiss_index import fill, new_index
from xmodal.index.tuning import exact_top_k, recall_at_k, tune_search

K = 10
TARGET_RECALL = 0.95
FLAT_TIME_CAP_S = 60.0
PCA_DIMS = (256, 128, 64)
PCA_SAMPLE = 100_000
CORES = os.cpu_count() or 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def build(factory: str, vectors: np.ndarray) -> tuple[faiss.Index, float]:
    """new_index + fill (train + add) with FAISS threads = all cores; seconds."""
    faiss.omp_set_num_threads(CORES)
    index = new_index(vectors.shape[1], factory)
    ids = np.arange(len(vectors), dtype=np.int64)
    started = time.perf_counter()
    fill(index, ids, vectors, factory)
    return index, time.perf_counter() - started


def index_bytes(index: faiss.Index) -> int:
    with tempfile.TemporaryDirectory(prefix="xmodal-search-") as tmp:
        path = Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size


def single_thread_search(
    index: faiss.Index, queries: np.ndarray, limit: int, cap_s: float = math.inf
) -> tuple[np.ndarray, float]:
    """One query at a time, one thread: (found ids of the queries run, queries/s)."""
    faiss.omp_set_num_threads(1)
    index.search(queries[:1], K)  # warm-up
    found = []
    started = time.perf_counter()
    for i in range(min(limit, len(queries))):
        found.append(index.search(queries[i : i + 1], K)[1][0])
        if time.perf_counter() - started > cap_s:
            break
    elapsed = time.perf_counter() - started
    faiss.omp_set_num_threads(CORES)
    return np.stack(found), len(found) / elapsed


def extrapolate(kind: str, seconds: float, probe: int, n: int) -> float:
    """HNSW insertion costs about log(n) per row; k-means and list assignment are linear."""
    factor = n / probe
    if kind == "hnsw":
        factor *= math.log(n) / math.log(probe)
    return seconds * factor


def probe_build(choice, base: np.ndarray, probe: int) -> dict:
    """Build the choice's factory on the first ``probe`` rows, time it, extrapolate to n."""
    index, seconds = build(choice.factory, base[:probe])
    del index
    gc.collect()
    estimate = extrapolate(choice.kind, seconds, probe, len(base))
    log(f"probe {choice.factory} at {probe}: {seconds:.1f} s -> ~{estimate:.0f} s at {len(base)}")
    return {
        "factory": choice.factory,
        "probe_n": probe,
        "build_s": round(seconds, 2),
        "extrapolated_build_s_at_n": round(estimate, 1),
        "extrapolation": "t*(n/p)*ln(n)/ln(p)" if choice.kind == "hnsw" else "t*(n/p)",
    }


def measure_index(label: str, choice, base, queries, truth, args) -> dict:
    """Build at full n, size it, tune it, then recall and single-thread QPS on held-out queries."""
    log(f"{label}: building {choice.factory} on {len(base)} rows")
    index, build_s = build(choice.factory, base)
    log(f"{label}: built in {build_s:.1f} s; serialising")
    size = index_bytes(index)
    row = {
        "label": label,
        "factory": choice.factory,
        "kind": choice.kind,
        "reason": choice.reason,
        "estimated_memory_bytes": choice.memory_bytes,
        "build_s": round(build_s, 2),
        "memory_bytes": size,
        "within_budget": size <= args.budget,
    }
    if choice.kind != "flat":
        started = time.perf_counter()
        tuned = tune_search(index, base, np.arange(len(base)), target_recall=TARGET_RECALL, k=K)
        row["tuning"] = {
            "params": tuned.params,
            "recall_on_tuning_sample": round(tuned.recall, 4),
            "reached_target": tuned.reached_target,
            "tuning_s": round(time.perf_counter() - started, 1),
        }
        log(f"{label}: tuned {tuned.params} recall {tuned.recall:.3f}")
    limit, cap = (
        (args.flat_queries, FLAT_TIME_CAP_S) if choice.kind == "flat" else (len(queries), math.inf)
    )
    found, qps = single_thread_search(index, queries, limit, cap)
    row["recall_at_10"] = round(recall_at_k(found, truth[: len(found)]), 4)
    row["queries_timed"] = len(found)
    row["single_thread_qps"] = round(qps, 2)
    log(f"{label}: recall@10 {row['recall_at_10']} over {len(found)} queries, {qps:.1f} q/s")
    del index
    gc.collect()
    row["peak_rss_gb_so_far"] = round(peak_rss_gb(), 2)
    return row


def measure_pca(base, queries, truth) -> list[dict]:
    try:
        from xmodal.index.projection import fit_pca, parse_projection
    except ImportError as exc:
        log(f"PCA skipped: {exc}")
        return [{"skipped": f"xmodal.index.projection not importable: {exc}"}]
    rows, full = [], base.shape[1]
    ids = np.arange(len(base), dtype=np.int64)
    for dims in PCA_DIMS:
        if dims >= full:
            continue
        started = time.perf_counter()
        projection = fit_pca(base, parse_projection(f"pca:{dims}"), sample_size=PCA_SAMPLE, seed=0)
        fit_s = time.perf_counter() - started
        projected = np.empty((len(base), dims), np.float32)
        for start in range(0, len(base), CHUNK):
            projected[start : start + CHUNK] = projection.transform(base[start : start + CHUNK])
        found = exact_top_k(projected, ids, projection.transform(queries), K)
        del projected
        rows.append(
            {
                "projection": f"pca:{dims}",
                "explained_variance_ratio": round(float(projection.explained_variance_ratio), 4),
                "recall_at_10": round(recall_at_k(found, truth), 4),
                "fit_s": round(fit_s, 2),
                "vector_bytes": len(base) * dims * 4,
                "memory_saved_fraction": round(1 - dims / full, 4),
            }
        )
        log(f"PCA {dims}: {rows[-1]}")
    return rows

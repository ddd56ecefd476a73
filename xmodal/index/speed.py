"""Is a tuned ANN index worth having? Its query time against an exact scan of the same rows.

"auto" picks an ANN index by size (see ``xmodal.index.choice``), but on a given machine and
dimension an exact scan can still be as fast at the recall target: then the ANN costs recall and
memory for nothing, and the collection keeps exact search (Flat). Both are timed on the same
sample queries, each several times, and compared by their medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from xmodal.index import exact
from xmodal.index.rowset import RowSet

Rows = np.ndarray | RowSet

TIMING_QUERIES = 32
TIMING_REPEATS = 5
EXACT_TIMING_ROWS = 65_536  # 128 MB of 512-d float32: far out of any CPU cache


@dataclass(frozen=True)
class SpeedCheck:
    """Median milliseconds per query of the tuned ANN index and of an exact scan."""

    ann_ms: float
    exact_ms: float
    exact_rows_timed: int = 0  # rows the exact scan was timed on (exact_ms is scaled to all)


def measure(index: faiss.Index, rows: Rows, queries: np.ndarray, k: int) -> SpeedCheck:
    """Time ``index`` (as tuned) and xmodal's exact scan (``exact.top_k``) of ``rows``.

    The exact side is the scan a Flat collection really runs (numpy matmul + argpartition), not
    FAISS's ``IndexFlatIP``, which is slower on a CPU: the ANN must beat what exact would cost.
    Over more than EXACT_TIMING_ROWS rows it is timed on the first EXACT_TIMING_ROWS and scaled
    by the row count: both the matmul and the partition are linear in the rows once they are out
    of cache, and a float32 copy of every row just to time it would cost ``n * 4d`` bytes.
    """
    queries = np.ascontiguousarray(queries[:TIMING_QUERIES], np.float32)
    timed = np.ascontiguousarray(rows[: min(len(rows), EXACT_TIMING_ROWS)], np.float32)
    ids = np.arange(len(timed), dtype=np.int64)
    ann_ms = _median_ms(lambda q: index.search(q, k), queries)
    exact_ms = _median_ms(lambda q: exact.top_k(timed, ids, q, k), queries)
    return SpeedCheck(ann_ms, exact_ms * len(rows) / max(len(timed), 1), len(timed))


def exact_reason(
    *, auto: bool, factory: str, flat_fits: bool, reached_target: bool, speed: SpeedCheck | None
) -> str | None:
    """Why exact search should replace the tuned ANN ``factory``; None keeps the ANN.

    ==========================================  ===============================================
    case                                        decision
    ==========================================  ===============================================
    not "auto" (a kind or factory was asked)    keep: the user chose it
    the choice is Flat already                  keep (nothing to compare)
    Flat does not fit the memory budget         keep: exact is not an option
    the ANN missed the recall target            exact: as fast is not needed, it is exact
    ANN median >= exact median (ms/query)       exact: not faster at the recall target
    ANN median < exact median                   keep the ANN
    ==========================================  ===============================================
    """
    if not auto or factory == "Flat" or not flat_fits:
        return None
    if not reached_target:
        return f"{factory} could not reach the recall target; exact search is exact"
    if speed is not None and speed.ann_ms >= speed.exact_ms:
        return (
            f"exact search ({speed.exact_ms:.3f} ms/query) is as fast as {factory} "
            f"({speed.ann_ms:.3f} ms/query) at the recall target"
        )
    return None


def _median_ms(search: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / max(len(queries), 1)

"""Is a tuned ANN index worth having? Its query time against an exact scan of the same rows.

"auto" picks an ANN index by size (see ``xmodal.index.choice``), but on a given machine and
dimension an exact scan can still be as fast at the recall target: then the ANN costs recall and
memory for nothing, and the collection keeps exact search (Flat). Both are timed on the same
sample queries, each several times, and compared by their medians.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import faiss
import numpy as np

TIMING_QUERIES = 32
TIMING_REPEATS = 5


@dataclass(frozen=True)
class SpeedCheck:
    """Median milliseconds per query of the tuned ANN index and of an exact scan."""

    ann_ms: float
    exact_ms: float


def measure(index: faiss.Index, rows: np.ndarray, queries: np.ndarray, k: int) -> SpeedCheck:
    """Time ``index`` (as tuned) and an exact inner-product scan of ``rows`` on ``queries``."""
    queries = np.ascontiguousarray(queries[:TIMING_QUERIES], np.float32)
    exact = faiss.IndexFlatIP(rows.shape[1])
    exact.add(np.ascontiguousarray(rows, np.float32))
    return SpeedCheck(_median_ms(index, queries, k), _median_ms(exact, queries, k))


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


def _median_ms(index: faiss.Index, queries: np.ndarray, k: int) -> float:
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        index.search(queries, k)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / max(len(queries), 1)

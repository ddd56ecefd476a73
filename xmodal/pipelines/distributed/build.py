"""Index building on Ray: IVF indexes are trained on a sample, filled in parts, then merged.

Used as the collection's index builder (``Collection.use_index_builder``), so the collection
still decides which index it wants and writes its own generation files. The rule:

- Flat and HNSW factories (what "auto" picks below ten million rows, see ``xmodal.index.choice``)
  are built in-process as usual: Flat has nothing to train or merge and an HNSW graph cannot be
  merged from parts.
- IVF factories (``IVF...,Flat``, ``OPQ..,IVF..,PQ..``): the coarse quantiser (and OPQ/PQ
  codebooks) are trained once, in the driver, on an evenly spaced sample of at most
  ``SAMPLE_PER_LIST`` rows per inverted list; the trained empty index is sent to Ray tasks that
  each add one contiguous part of the rows; the parts' inverted lists are merged in order into
  the trained index. Rows keep their positions as FAISS-internal ids, which is what sequential
  adds would have given, so the id map and search results match an in-process build.
"""

from __future__ import annotations

import itertools
import logging
from types import ModuleType

import faiss
import numpy as np

from xmodal.index import faiss_index
from xmodal.index.vectors import IndexBuilder

log = logging.getLogger(__name__)

SAMPLE_PER_LIST = 256  # FAISS's k-means uses at most 256 points per centroid anyway
MIN_PART_ROWS = 10_000


def ray_index_builder(
    ray: ModuleType, parts: int, min_part_rows: int = MIN_PART_ROWS
) -> IndexBuilder:
    """An index builder that fills IVF indexes in up to ``parts`` Ray tasks of enough rows."""
    add_part = ray.remote(_add_part)

    def build(dim: int, factory: str, ids: np.ndarray, vectors: np.ndarray) -> faiss.IndexIDMap2:
        index = faiss_index.new_index(dim, factory)
        if "IVF" not in factory or not len(ids):
            faiss_index.fill(index, ids, vectors, factory)
            return index
        base = faiss.downcast_index(index.index)
        faiss_index.train(index, _sample(vectors, faiss.extract_index_ivf(base).nlist), factory)
        bounds = _bounds(len(ids), parts, min_part_rows)
        log.info("adding %d rows to %s in %d parts", len(ids), factory, len(bounds) - 1)
        trained, rows = ray.put(faiss.serialize_index(base)), ray.put(vectors)
        refs = [add_part.remote(trained, rows, a, b) for a, b in itertools.pairwise(bounds)]
        target = faiss.extract_index_ivf(base)
        for ref in refs:  # in order, so every list holds its rows in row order
            part = faiss.deserialize_index(ray.get(ref))
            target.merge_from(faiss.extract_index_ivf(part), 0)
        base.ntotal = target.ntotal  # a pre-transform wrapper does not see the merge
        return _with_ids(index, ids)

    return build


def _add_part(trained: np.ndarray, vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Ray task: add rows [start, stop) to a copy of the trained index, ids = row positions."""
    index = faiss.deserialize_index(trained)
    index.add_with_ids(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
    return faiss.serialize_index(index)


def _sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """Every k-th row, at most SAMPLE_PER_LIST per list (all rows when there are few)."""
    limit = max(SAMPLE_PER_LIST * nlist, MIN_PART_ROWS)
    if len(vectors) <= limit:
        return vectors
    picked = np.linspace(0, len(vectors) - 1, limit).astype(np.int64)
    return np.ascontiguousarray(vectors[picked])


def _bounds(n: int, parts: int, min_rows: int) -> list[int]:
    """Part boundaries: at most ``parts`` parts of at least ``min_rows`` rows."""
    count = max(1, min(parts, n // max(min_rows, 1)))
    return [round(i * n / count) for i in range(count + 1)]


def _with_ids(index: faiss.IndexIDMap2, ids: np.ndarray) -> faiss.IndexIDMap2:
    """Point the id map at the merged rows: internal id ``i`` is the collection id ``ids[i]``."""
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, np.int64), index.id_map)
    index.ntotal = len(ids)
    index.construct_rev_map()
    return index

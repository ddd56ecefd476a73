"""Index building on Ray: IVF indexes are trained on a sample, filled in parts, then merged.

Used as the collection's index builder (``Collection.use_index_builder``), so the collection
still decides which index it wants and writes its own generation files. The rule:

- Flat and HNSW factories (what "auto" picks below ten million rows, see ``xmodal.index.choice``)
  are built in-process as usual: Flat has nothing to train or merge and an HNSW graph cannot be
  merged from parts.
- IVF factories (``IVF...,Flat``, ``OPQ..,IVF..,PQ..``): the coarse quantiser (and OPQ/PQ
  codebooks) are trained once, in the driver, on an evenly spaced sample
  (``faiss_index.training_sample``, as an in-process build takes); the trained empty index is
  sent to Ray tasks that each add one contiguous part of the rows (at most MAX_PART_ROWS; the
  driver reads a part from the segment files only when a task slot is free, so it never holds
  all rows); the parts' inverted lists are merged in order into the trained index: on disk,
  into the segment's own lists file (``xmodal.index.ondisk``), when the collection's directory
  is given (``xmodal index --ray`` gives it), else in memory. Rows keep
  their positions as FAISS-internal ids, which is what sequential adds would have given, so the
  id map and search results match an in-process build.
"""

from __future__ import annotations

import logging
import tempfile
from collections import deque
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import faiss
import numpy as np

from xmodal.index import faiss_index, ondisk
from xmodal.index.durable import TEMP_PREFIX, temp_path
from xmodal.index.rowset import RowSet
from xmodal.index.vectors import IndexBuilder

log = logging.getLogger(__name__)

MIN_PART_ROWS = 10_000
MAX_PART_ROWS = 262_144  # 512 MB of 512-d float32 rows in flight per task


def ray_index_builder(
    ray: ModuleType,
    parts: int,
    min_part_rows: int = MIN_PART_ROWS,
    lists_dir: Path | None = None,
) -> IndexBuilder:
    """An index builder that fills IVF indexes in Ray tasks, at most ``parts`` at a time.

    With ``lists_dir`` (the collection's directory) the parts are merged on disk into a lists
    file there (``xmodal.index.ondisk``), which the segment then keeps; without, in memory.
    """
    add_part = ray.remote(_add_part)

    def build(dim: int, factory: str, ids: np.ndarray, rows: RowSet) -> faiss.IndexIDMap2:
        index = faiss_index.new_index(dim, factory)
        if "IVF" not in factory or not len(ids):
            faiss_index.fill(index, ids, rows, factory)
            return index
        base = faiss.downcast_index(index.index)
        faiss_index.train(index, faiss_index.training_sample(index, rows), factory)
        bounds = _bounds(len(ids), parts, min_part_rows)
        log.info("adding %d rows to %s in %d parts", len(ids), factory, len(bounds) - 1)
        trained = ray.put(faiss.serialize_index(base))
        refs = (add_part.remote(trained, ray.put(rows[a:b]), a) for a, b in pairwise(bounds))
        if lists_dir is None:
            target = faiss.extract_index_ivf(base)
            for part in _in_order(ray, refs, parts):  # every list holds its rows in row order
                loaded = faiss.deserialize_index(part)  # alive while its lists are merged
                target.merge_from(faiss.extract_index_ivf(loaded), 0)
            base.ntotal = target.ntotal  # a pre-transform wrapper does not see the merge
        else:
            _merge_on_disk(ray, base, refs, parts, lists_dir)
        return _with_ids(index, ids)

    return build


def _in_order(ray: ModuleType, refs: Iterator[Any], parts: int) -> Iterator[np.ndarray]:
    """The tasks' results in submission order, with at most ``parts`` tasks submitted and not
    yet taken: the driver reads a part of rows only when a slot is free."""
    pending: deque = deque()
    for ref in refs:
        pending.append(ref)
        if len(pending) >= parts:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


def _merge_on_disk(
    ray: ModuleType, base: faiss.Index, refs: Iterator[Any], parts: int, lists_dir: Path
) -> None:
    """Each part index goes to a scratch file as it arrives; then all are merged on disk."""
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=lists_dir) as scratch:
        files = []
        for number, part in enumerate(_in_order(ray, refs, parts)):
            files.append(Path(scratch) / f"part-{number:06d}.faiss")
            np.asarray(part).tofile(files[-1])
            del part
        lists = temp_path(lists_dir, "lists" + ondisk.SUFFIX)
        ondisk.merge_parts(base, files, lists)


def _add_part(trained: np.ndarray, vectors: np.ndarray, start: int) -> np.ndarray:
    """Ray task: add ``vectors`` to a copy of the trained index, ids = their row positions."""
    index = faiss.deserialize_index(trained)
    index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
    return faiss.serialize_index(index)


def _bounds(n: int, parts: int, min_rows: int) -> list[int]:
    """Part boundaries: parts of at least ``min_rows`` and at most MAX_PART_ROWS rows, and at
    least ``parts`` of them when the rows allow."""
    count = max(1, min(parts, n // max(min_rows, 1)), -(-n // MAX_PART_ROWS))
    return [round(i * n / count) for i in range(count + 1)]


def _with_ids(index: faiss.IndexIDMap2, ids: np.ndarray) -> faiss.IndexIDMap2:
    """Point the id map at the merged rows: internal id ``i`` is the collection id ``ids[i]``."""
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, np.int64), index.id_map)
    index.ntotal = len(ids)
    index.construct_rev_map()
    return index

"""The items a curation command looks at: the collection's raw rows, narrowed by a filter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index.filters import Filter


@dataclass(frozen=True)
class Considered:
    """Rows ``positions`` of ``rows`` (raw float16, maybe a memmap), whose ids are ``ids``.

    Items are numbered locally 0..n-1 in ``positions`` order, which is ascending id order.
    """

    rows: np.ndarray
    positions: np.ndarray
    ids: np.ndarray

    def local(self, ids: np.ndarray) -> np.ndarray:
        """Local numbers of ``ids`` (all of which must be considered)."""
        return np.searchsorted(self.ids, ids)


def considered_items(collection: Collection, where: Filter | None) -> Considered:
    """The collection's items matching ``where``; a clear error when there are none."""
    all_ids, rows = collection.raw_embeddings()
    if not len(all_ids):
        raise XmodalError(
            f"collection {collection.directory} is empty: there is nothing to compare"
        )
    order = np.argsort(all_ids, kind="stable")
    if where is not None:
        order = order[np.isin(all_ids[order], collection.ids_where(where))]
        if not len(order):
            raise XmodalError(f"no item of the collection matches the filter {str(where)!r}")
    return Considered(rows, order, all_ids[order])

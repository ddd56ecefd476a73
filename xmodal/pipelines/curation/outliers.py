"""Outliers: the items that lie furthest from their nearest neighbours in embedding space.

An item's score is ``1 - mean cosine to its k nearest other items`` (raw embeddings, as stored):
0 for an item with k exact copies, 1 for one orthogonal to its neighbours on average, up to 2.
It is a local measure: an item in a small, tight cluster scores low even if the cluster is far
from everything else. An exact copy of an item counts as one of its neighbours. With fewer than
k + 1 items, every other item is a neighbour.

The neighbours come from ``xmodal.index.neighbours`` (exact up to 20k items, clustered above,
bounded memory); each ranked item is reported with the neighbours it was judged against.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index.filters import Filter, as_filter
from xmodal.index.neighbours import EXACT_MAX, NeighbourPlan, nearest_neighbours, plan_neighbours
from xmodal.index.records import Record
from xmodal.pipelines.curation.selection import considered_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutlierConfig:
    """How many outliers to report and how many neighbours judge each item."""

    top: int = 20
    k: int = 10
    where: Filter | str | Sequence[str] | None = None
    probes: int = 4  # clustered plans: k-NN needs wider probing than duplicates
    exact_max: int = EXACT_MAX


@dataclass(frozen=True, slots=True)
class Neighbour:
    id: int
    record: Record
    score: float  # cosine to the outlier


@dataclass(frozen=True, slots=True)
class Outlier:
    id: int
    record: Record
    score: float  # 1 - mean cosine to ``neighbours``
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class OutlierReport:
    k: int  # neighbours each item was judged against (k, or n - 1 when fewer items)
    considered: int
    outliers: tuple[Outlier, ...]  # highest score first
    plan: NeighbourPlan

    def summary(self) -> str:
        how = "exact" if self.plan.exact else f"clustered {self.plan.clusters}x{self.plan.probes}"
        return (
            f"{len(self.outliers)} most isolated of {self.considered} items "
            f"(score = 1 - mean cosine to the {self.k} nearest, {how} search)"
        )


def check_counts(top: int, k: int) -> None:
    if top < 1:
        raise XmodalError(f"top must be at least 1, got {top}")
    if k < 1:
        raise XmodalError(f"k must be at least 1, got {k}")


def find_outliers(collection: Collection, config: OutlierConfig) -> OutlierReport:
    """The ``top`` items with the highest outlier score; see the module docstring."""
    check_counts(config.top, config.k)
    items = considered_items(collection, as_filter(config.where))
    n = len(items.positions)
    if n < 2:
        raise XmodalError("outliers need at least 2 items to compare; 1 item is considered")
    k = min(config.k, n - 1)
    plan = plan_neighbours(n, config.probes, config.exact_max)
    cosines, neighbours = nearest_neighbours(items.rows, items.positions, k, plan)
    scores = 1.0 - cosines.mean(axis=1)
    ranked = np.lexsort((items.ids, -scores))[: config.top]  # ties: lower id first
    wanted = np.concatenate([items.ids[ranked], items.ids[neighbours[ranked].ravel()]])
    records = collection.get_records(wanted)
    outliers = tuple(
        Outlier(
            int(items.ids[row]),
            records[int(items.ids[row])],
            round(float(scores[row]), 6),
            tuple(
                Neighbour(int(items.ids[j]), records[int(items.ids[j])], round(float(c), 6))
                for j, c in zip(neighbours[row], cosines[row], strict=True)
            ),
        )
        for row in ranked
    )
    report = OutlierReport(k, n, outliers, plan)
    log.info("%s", report.summary())
    return report

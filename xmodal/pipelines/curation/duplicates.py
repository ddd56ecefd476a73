"""Exact and near-duplicate groups of a collection, each with a suggested keeper.

Two items are *linked* when the catalog records the same content hash for both (byte-identical
files) or when the cosine of their raw embeddings (the encoder's unit vectors, as stored) is at
least ``threshold``. A group is a connected component of that graph with two or more members
(union-find over the links). Components chain: A~B and B~C put A and C in one group even when
A and C are further apart than the threshold, so every member reports its own cosine to the
keeper, which may be below the threshold. A group is ``exact`` when all its members share one
content hash, else ``near``.

Nothing is deleted or changed: the result is a report, a CSV or a list of paths to keep.
The pairs come from ``xmodal.index.neighbours``: exact up to 20k items, SemDeDup-style clustered
above, in bounded memory (see there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index.components import UnionFind
from xmodal.index.filters import Filter, as_filter
from xmodal.index.neighbours import (
    EXACT_MAX,
    NeighbourPlan,
    gather,
    pairs_at_least,
    plan_neighbours,
)
from xmodal.index.records import Record
from xmodal.pipelines.curation.keepers import check_rule, choose_keeper
from xmodal.pipelines.curation.selection import Considered, considered_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DuplicateConfig:
    """What counts as a duplicate and which copy to keep."""

    threshold: float = 0.95
    keep: str = "largest"
    where: Filter | str | Sequence[str] | None = None
    probes: int = 2  # clustered plans: lists each item is compared with
    exact_max: int = EXACT_MAX  # up to this many items, every pair is compared


@dataclass(frozen=True, slots=True)
class Member:
    """One item of a group; ``score`` is its cosine to the group's keeper (1.0 for the keeper)."""

    id: int
    record: Record
    score: float


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """A connected component of linked items; ``members[0]`` is the keeper."""

    kind: str  # "exact" or "near"
    members: tuple[Member, ...]

    @property
    def keeper(self) -> Member:
        return self.members[0]


@dataclass(frozen=True)
class DuplicateReport:
    """The groups found among ``considered`` items (those matching the filter)."""

    threshold: float
    keep: str
    considered: int
    groups: tuple[DuplicateGroup, ...]
    plan: NeighbourPlan
    considered_ids: np.ndarray = field(repr=False)

    @property
    def dropped_ids(self) -> set[int]:
        """Members that are not their group's keeper."""
        return {m.id for g in self.groups for m in g.members[1:]}

    def summary(self) -> str:
        dropped = sum(len(g.members) - 1 for g in self.groups)
        how = "exact" if self.plan.exact else f"clustered {self.plan.clusters}x{self.plan.probes}"
        return (
            f"{len(self.groups)} group{'s' if len(self.groups) != 1 else ''}, {dropped} duplicate"
            f"{'s' if dropped != 1 else ''} among {self.considered} items "
            f"(threshold {self.threshold:g}, keep {self.keep}, {how} search)"
        )


def check_threshold(threshold: float) -> float:
    """A cosine threshold in (-1, 1]: -1 would link every pair, above 1 none."""
    value = float(threshold)
    if not (math.isfinite(value) and -1.0 < value <= 1.0):
        raise XmodalError(f"threshold must be in (-1, 1], got {threshold:g}")
    return value


def find_duplicates(collection: Collection, config: DuplicateConfig) -> DuplicateReport:
    """Groups of exact and near-duplicates with keepers; see the module docstring."""
    threshold = check_threshold(config.threshold)
    check_rule(config.keep)
    where = as_filter(config.where)
    items = considered_items(collection, where)
    links = UnionFind(len(items.positions))
    for ids in collection.hash_groups(where):
        local = items.local(np.asarray(ids, np.int64))
        links.union(local[:-1], local[1:])
    plan = plan_neighbours(len(items.positions), config.probes, config.exact_max)
    for a, b, _ in pairs_at_least(items.rows, items.positions, threshold, plan):
        links.union(a, b)
    groups = _groups(collection, items, links.components(), config.keep)
    report = DuplicateReport(threshold, config.keep, len(items.positions), groups, plan, items.ids)
    log.info("%s", report.summary())
    return report


def _groups(
    collection: Collection, items: Considered, components: list[np.ndarray], rule: str
) -> tuple[DuplicateGroup, ...]:
    wanted = items.ids[np.concatenate(components)] if components else np.zeros(0, np.int64)
    records = collection.get_records(wanted)
    groups = []
    for local in components:
        ids = items.ids[local].tolist()
        members = {i: records[i] for i in ids}
        keeper = choose_keeper(members, rule)
        vectors = gather(items.rows, items.positions[local])
        scores = vectors @ vectors[ids.index(keeper)]
        ranked = _ranked(ids, scores, members, keeper)
        hashes = {r.content_hash for r in members.values()}
        kind = "exact" if len(hashes) == 1 and None not in hashes else "near"
        groups.append(DuplicateGroup(kind, ranked))
    groups.sort(key=lambda g: (-len(g.members), g.keeper.id))
    return tuple(groups)


def _ranked(
    ids: list[int], scores: np.ndarray, members: dict[int, Record], keeper: int
) -> tuple[Member, ...]:
    """Keeper first, then by cosine to it (best first), then by id."""
    others = sorted(
        ((round(float(s), 6), i) for i, s in zip(ids, scores, strict=True) if i != keeper),
        key=lambda pair: (-pair[0], pair[1]),
    )
    keep_score = round(float(scores[ids.index(keeper)]), 6)
    return (
        Member(keeper, members[keeper], keep_score),
        *(Member(i, members[i], s) for s, i in others),
    )

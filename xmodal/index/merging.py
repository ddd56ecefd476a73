"""The merge policy: which segments to merge, as a pure function of their live sizes.

Lucene's TieredMergePolicy in miniature. Every commit adds one small segment, so without merges
a collection of N rows built in commits of B would hold N/B segments and a search would visit
them all. Merging everything at every commit is the monolithic design again (each commit
rewrites N rows: quadratic build time). Tiers sit between: a segment's tier is how many times
``FACTOR`` its size is above ``FLOOR`` (segments under ``FLOOR`` rows share tier 0); when a tier
holds more than ``MAX_PER_TIER`` segments its ``MERGE_AT_ONCE`` smallest are merged into one,
which lands about one tier higher. Each row is therefore rewritten about once per tier, i.e.
O(log N) times over its life, and the segment count stays O(MAX_PER_TIER * log N). One merge per
crowded tier per call keeps a commit's extra work bounded; the next commit continues the cascade.
Merging from the small end first keeps merges cheap (Lucene's "prefer smaller merges").

Tombstoned rows do not count (``live`` sizes): a segment that lost most of its rows drops a tier
and merges with its new peers, which is when its deleted rows are finally dropped from disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FLOOR = 4096
FACTOR = 10
MAX_PER_TIER = 10
MERGE_AT_ONCE = 10


def tier_of(size: int) -> int:
    """0 for segments up to FLOOR rows, then one more per FACTOR times larger."""
    if size <= FLOOR:
        return 0
    return int(math.floor(math.log(size / FLOOR, FACTOR))) + 1


def plan_merges(sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """Positions (into ``sizes``) of the segments to merge, one tuple per merge to run.

    Empty segments (every row tombstoned) are always merged away (alone, a merge of nothing live
    just drops them). Then, per tier holding more than MAX_PER_TIER segments, its MERGE_AT_ONCE
    smallest segments (ties: the older, lower position, first) form one merge.
    """
    merges: list[tuple[int, ...]] = []
    empty = tuple(i for i, size in enumerate(sizes) if size == 0)
    tiers: dict[int, list[int]] = {}
    for position, size in enumerate(sizes):
        if size > 0:
            tiers.setdefault(tier_of(size), []).append(position)
    for tier in sorted(tiers):
        members = tiers[tier]
        if len(members) > MAX_PER_TIER:
            smallest = sorted(members, key=lambda p: (sizes[p], p))[:MERGE_AT_ONCE]
            merges.append(tuple(sorted(smallest)))
    if empty:
        if merges:  # ride along with the first merge: one new segment, not two
            merges[0] = tuple(sorted(merges[0] + empty))
        else:
            merges.append(empty)
    return merges


def plan_compaction(sizes: Sequence[int], *, full: bool) -> list[tuple[int, ...]]:
    """What ``xmodal compact`` merges: everything (``full``), else each tier into one segment.

    Without ``full`` every tier holding more than one segment is merged into one: the fewest
    segments the tiers allow without rewriting the largest segments into each other.
    """
    if full:
        return [tuple(range(len(sizes)))] if len(sizes) > 1 or any(s == 0 for s in sizes) else []
    tiers: dict[int, list[int]] = {}
    for position, size in enumerate(sizes):
        tiers.setdefault(tier_of(size) if size else 0, []).append(position)
    return [
        tuple(members)
        for _, members in sorted(tiers.items())
        if len(members) > 1 or any(sizes[p] == 0 for p in members)
    ]

"""Which member of a duplicate group to keep: a pure function of the members' catalog records.

Rules (``--keep``), each ending in the lowest id so that the choice is always deterministic:

- ``largest``: most pixels (width x height), then most bytes. The largest copy is usually the
  original (a resized or re-encoded copy only loses information). A member whose pixels or
  bytes the catalog does not know ranks below every member whose value is known.
- ``oldest``: smallest mtime, the first copy made; unknown mtimes rank last.
- ``newest``: largest mtime, e.g. the last edited export; unknown mtimes rank last.
- ``first``: lowest catalog id, the copy indexed first.
"""

from __future__ import annotations

from collections.abc import Mapping

from xmodal.errors import XmodalError
from xmodal.index.records import Record

KEEP_RULES = ("largest", "oldest", "newest", "first")


def check_rule(rule: str) -> str:
    if rule not in KEEP_RULES:
        raise XmodalError(f"unknown keep rule {rule!r}; use one of {', '.join(KEEP_RULES)}")
    return rule


def choose_keeper(members: Mapping[int, Record], rule: str) -> int:
    """The id to keep among ``members`` (id -> record) under ``rule`` (see the module docstring)."""
    check_rule(rule)
    if not members:
        raise ValueError("a duplicate group has at least one member")
    return min(members, key=lambda item_id: (*_rank(members[item_id], rule), item_id))


def _rank(record: Record, rule: str) -> tuple[float, ...]:
    """A sort key where smaller is better; unknown values sort after every known one."""
    if rule == "largest":
        pixels = (
            record.width * record.height
            if record.width is not None and record.height is not None
            else None
        )
        return (*_known_first(pixels, descending=True), *_known_first(record.size, descending=True))
    if rule in ("oldest", "newest"):
        return _known_first(record.mtime, descending=rule == "newest")
    return ()


def _known_first(value: float | None, *, descending: bool) -> tuple[float, float]:
    if value is None:
        return (1, 0.0)
    return (0, -value if descending else value)

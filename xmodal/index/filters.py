"""Search filters: a small ``where`` language over catalog columns, turned into SQL parameters.

Grammar (one filter is one or more clauses, all of which must hold)::

    filter  := clause (" and " clause)*         -- or a list of such strings, all ANDed
    clause  := "path:" GLOB                      -- glob over the absolute path
             | "path^=" PREFIX                   -- the path starts with PREFIX
             | "path=" PATH                      -- exactly this path
             | "ext:" EXT ("," EXT)*             -- file extension, any case (jpg,png)
             | NUMERIC OP NUMBER                 -- size, width, height (bytes, pixels)
             | "mtime" OP (ISO-DATE | EPOCH)     -- modification time
             | "tag:" LABEL                      -- tagged LABEL by ``xmodal tag`` (any case)
    OP      := ">=" | "<=" | "!=" | ">" | "<" | "="

``and`` is case-insensitive and needs spaces around it; a value holding spaces or the word
``and`` is wrapped in double quotes (``path:"~/Tom and Jerry/*"``). Paths start with ``~``
expanded. A glob that starts with neither ``/`` nor ``*`` matches at any depth (``*/`` is put in
front), and ``*`` also crosses ``/``, so ``path:~/Pictures/2023/*`` takes the whole subtree.
Relative prefixes are resolved against the current directory, as the catalog holds absolute,
resolved paths. ISO dates without a timezone are UTC; a date alone means its midnight. Items
whose column is unknown (no width recorded, say) never match a comparison on it.

User text never becomes SQL: each clause maps to a fixed SQL fragment with ``?`` parameters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xmodal.errors import FilterError

NUMERIC_FIELDS = ("size", "width", "height", "mtime")
_OPS = (">=", "<=", "!=", ">", "<", "=")
_FIELDS = "path, ext, size, width, height, mtime, tag"
_AND = re.compile(r'\s+and\s+(?=(?:[^"]*"[^"]*")*[^"]*$)', re.IGNORECASE)
_CLAUSE = re.compile(r"^\s*([A-Za-z_]+)\s*(\^=|>=|<=|!=|:|>|<|=)\s*(.*?)\s*$", re.DOTALL)
_EXT = re.compile(r"^\.?[A-Za-z0-9]+$")


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition: ``field op value`` with the value already checked and converted."""

    field: str
    op: str
    value: str | float | tuple[str, ...]

    def sql(self, vis: str = "1") -> tuple[str, list]:
        """A fixed SQL fragment and its parameters; ``vis`` selects the tag rows of a generation."""
        if self.field == "ext":
            exts = list(self.value)  # type: ignore[arg-type]
            return "(" + " OR ".join(["lower(path) GLOB ?"] * len(exts)) + ")", [
                f"*.{e}" for e in exts
            ]
        if self.field == "tag":
            sql = f"id IN (SELECT id FROM tags WHERE label = ? COLLATE NOCASE AND {vis})"
            return sql, [self.value]
        if self.op == ":":
            return "path GLOB ?", [self.value]
        if self.op == "^=":
            return _prefix_sql(str(self.value))
        column = {"path": "path", "size": "size", "width": "width", "height": "height"}.get(
            self.field, "mtime"
        )
        return f"{column} {self.op} ?", [self.value]

    def __str__(self) -> str:
        value = ",".join(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.field}{self.op}{value}"


@dataclass(frozen=True, slots=True)
class Filter:
    """A conjunction of clauses; the empty filter matches everything."""

    clauses: tuple[Clause, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.clauses

    @property
    def uses_tags(self) -> bool:
        """True when a clause asks for a tag (the catalog then needs tags to answer)."""
        return any(clause.field == "tag" for clause in self.clauses)

    def sql(self, vis: str = "1") -> tuple[str, list]:
        """``(where_sql, params)`` for ``SELECT id FROM items WHERE <where_sql>``.

        ``vis`` is the catalog's condition for the rows of the reader's generation
        (``xmodal.index.versions``), applied to the tag rows a clause consults.
        """
        if not self.clauses:
            return "1", []
        parts = [clause.sql(vis) for clause in self.clauses]
        return " AND ".join(f"({s})" for s, _ in parts), [p for _, ps in parts for p in ps]

    def __str__(self) -> str:
        return " and ".join(str(c) for c in self.clauses)


def parse_where(text: str | Sequence[str]) -> Filter:
    """Parse ``text`` (or a list of texts, all ANDed) into a Filter; see the module docstring."""
    texts = [text] if isinstance(text, str) else list(text)
    clauses: list[Clause] = []
    for part in texts:
        if not isinstance(part, str) or not part.strip():
            raise FilterError(
                f"empty filter {part!r}; write clauses such as 'ext:jpg and width>=1024'"
            )
        clauses.extend(_parse_clause(raw) for raw in _AND.split(part.strip()))
    return Filter(tuple(clauses))


def as_filter(where: Filter | str | Sequence[str] | None) -> Filter | None:
    """Accept a Filter, a filter string or a list of them; None and empty mean no filter."""
    if where is None or isinstance(where, Filter):
        return None if where is None or where.empty else where
    if not isinstance(where, str) and len(where) == 0:
        return None
    return parse_where(where)


def _parse_clause(raw: str) -> Clause:
    match = _CLAUSE.match(raw)
    if not match:
        raise _bad(raw, f"expected FIELD OP VALUE with FIELD one of {_FIELDS}")
    field, op, value = match.group(1).lower(), match.group(2), _unquote(match.group(3))
    if not value:
        raise _bad(raw, "the value is missing")
    if field == "path":
        return _path_clause(raw, op, value)
    if field == "ext":
        if op != ":":
            raise _bad(raw, "ext takes a list after a colon, e.g. ext:jpg,png")
        exts = tuple(e.strip() for e in value.split(","))
        if not all(_EXT.match(e) for e in exts):
            raise _bad(raw, "extensions are letters and digits separated by commas")
        return Clause("ext", ":", tuple(e.lstrip(".").lower() for e in exts))
    if field == "tag":
        if op != ":":
            raise _bad(raw, 'tag takes a label after a colon, e.g. tag:dog or tag:"hot dog"')
        return Clause("tag", ":", value)
    if field in NUMERIC_FIELDS:
        if op not in _OPS:
            raise _bad(raw, f"{field} is compared with one of {' '.join(_OPS)}")
        number = _mtime(raw, value) if field == "mtime" else _number(raw, value)
        return Clause(field, op, number)
    raise _bad(raw, f"unknown field {field!r}; use one of {_FIELDS}")


def _path_clause(raw: str, op: str, value: str) -> Clause:
    expanded = os.path.expanduser(value)  # keeps a trailing slash, unlike Path
    if op == ":":
        if not expanded.startswith(("/", "*")):
            expanded = "*/" + expanded
        return Clause("path", ":", expanded)
    if op in ("^=", "="):
        absolute = expanded if expanded.startswith("/") else str(Path(expanded).resolve())
        if op == "^=" and expanded.endswith("/") and not absolute.endswith("/"):
            absolute += "/"  # resolve() drops the slash that limits a prefix to one folder
        return Clause("path", op, absolute)
    raise _bad(raw, "path takes ':' (glob), '^=' (prefix) or '=' (exact)")


def _prefix_sql(prefix: str) -> tuple[str, list]:
    """A range on the path column: uses its UNIQUE index, and no LIKE/GLOB escaping issues."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return "substr(path, 1, ?) = ?", [len(prefix), prefix]
    return "path >= ? AND path < ?", [prefix, prefix[:-1] + chr(last + 1)]


def _number(raw: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(raw, f"{value!r} is not a number") from None
    return int(number) if number.is_integer() else number


def _mtime(raw: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        why = f"{value!r} is neither an ISO date (2024-01-31, 2024-01-31T12:00) nor epoch seconds"
        raise _bad(raw, why) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _bad(raw: str, why: str) -> FilterError:
    return FilterError(f"bad filter clause {raw.strip()!r}: {why}")

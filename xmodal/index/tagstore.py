"""Zero-shot tags in the catalog: which labels each item got, and with which settings.

Tags live in the same SQLite file as the items, so they are published by the collection's
normal commit (a new catalog generation, one atomic manifest switch) and readers see tags and
items of one generation together. A trigger drops an item's tags whenever its row is deleted
(removed, or replaced by a re-indexed file), so a re-indexed file is untagged and the next
``xmodal tag`` run tags it. ``tagged`` lists the items that were classified even when none of
their labels passed the bar; ``tag_settings`` holds the fingerprint of the labels, templates and
thresholds that produced the stored tags.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tags (id INTEGER NOT NULL, label TEXT NOT NULL, "
    "prob REAL NOT NULL, PRIMARY KEY (id, label))",
    "CREATE INDEX IF NOT EXISTS tags_label ON tags(label COLLATE NOCASE)",
    "CREATE TABLE IF NOT EXISTS tagged (id INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS tag_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS items_drop_tags AFTER DELETE ON items BEGIN "
    "DELETE FROM tags WHERE id = old.id; DELETE FROM tagged WHERE id = old.id; END",
)
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Tag:
    """One label given to an item, with its zero-shot probability."""

    label: str
    prob: float


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def has_tables(conn: sqlite3.Connection) -> bool:
    query = "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tagged'"
    return bool(conn.execute(query).fetchone()[0])


def settings(conn: sqlite3.Connection) -> str | None:
    """The fingerprint of the settings the stored tags were made with; None if never tagged."""
    if not has_tables(conn):
        return None
    row = conn.execute("SELECT value FROM tag_settings WHERE key='fingerprint'").fetchone()
    return None if row is None else str(row[0])


def reset(conn: sqlite3.Connection, fingerprint: str) -> None:
    """Forget every tag and record the settings the next tags will be made with."""
    conn.execute("DELETE FROM tags")
    conn.execute("DELETE FROM tagged")
    conn.execute(
        "INSERT OR REPLACE INTO tag_settings (key, value) VALUES ('fingerprint', ?)", (fingerprint,)
    )


def put(conn: sqlite3.Connection, tags: dict[int, Sequence[Tag]]) -> None:
    """Store the tags of these items (replacing any they had) and mark them tagged."""
    ids = [(int(i),) for i in tags]
    conn.executemany("DELETE FROM tags WHERE id = ?", ids)
    conn.executemany("INSERT OR IGNORE INTO tagged (id) VALUES (?)", ids)
    rows = [(int(i), t.label, float(t.prob)) for i, chosen in tags.items() for t in chosen]
    conn.executemany("INSERT INTO tags (id, label, prob) VALUES (?, ?, ?)", rows)


def untagged(conn: sqlite3.Connection) -> list[int]:
    """Ids of items not classified with the current settings, ascending."""
    if not has_tables(conn):
        return [int(r[0]) for r in conn.execute("SELECT id FROM items ORDER BY id")]
    query = "SELECT id FROM items WHERE id NOT IN (SELECT id FROM tagged) ORDER BY id"
    return [int(r[0]) for r in conn.execute(query)]


def tags_for(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, tuple[Tag, ...]]:
    """Tags of the given ids, most probable first; untagged ids are left out."""
    if not has_tables(conn):
        return {}
    wanted = list(dict.fromkeys(int(i) for i in ids))
    found: dict[int, list[Tag]] = {}
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        marks = ",".join("?" * len(batch))
        query = f"SELECT id, label, prob FROM tags WHERE id IN ({marks}) ORDER BY id, prob DESC"
        for item, label, prob in conn.execute(query, batch):
            found.setdefault(int(item), []).append(Tag(label, float(prob)))
    return {item: tuple(chosen) for item, chosen in found.items()}

"""Zero-shot tags in the catalog: which labels each item got, and with which settings.

Tags live in the catalog database beside the items, versioned like them
(``xmodal.index.versions``), so they are published by the collection's commit and readers see
tags and items of one generation together. A trigger retires an item's tags whenever its row is
retired (removed, or replaced by a re-indexed file), so a re-indexed file is untagged and the
next ``xmodal tag`` run tags it. ``tagged`` lists the items that were classified even when none
of their labels passed the bar; ``tag_settings`` holds the fingerprint of the labels, templates
and thresholds that produced the stored tags.

Every query takes ``vis``, the SQL condition selecting the rows of the reader's generation
(``versions.visible``; "1" for catalogs written before versions, which have one generation).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xmodal.index.versions import COLUMNS, LIVE, retire, version_indexes

_RETIRE = (
    "DELETE FROM {t} WHERE id = old.id AND added_gen = new.removed_gen AND removed_gen IS NULL; "
    "UPDATE {t} SET removed_gen = new.removed_gen WHERE id = old.id AND removed_gen IS NULL;"
)
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS tags (id INTEGER NOT NULL, label TEXT NOT NULL, "
    f"prob REAL NOT NULL, {COLUMNS})",
    f"CREATE UNIQUE INDEX IF NOT EXISTS tags_key ON tags(id, label, {LIVE})",
    "CREATE INDEX IF NOT EXISTS tags_label ON tags(label COLLATE NOCASE)",
    f"CREATE TABLE IF NOT EXISTS tagged (id INTEGER NOT NULL, {COLUMNS})",
    f"CREATE UNIQUE INDEX IF NOT EXISTS tagged_key ON tagged(id, {LIVE})",
    f"CREATE TABLE IF NOT EXISTS tag_settings (key TEXT NOT NULL, value TEXT NOT NULL, {COLUMNS})",
    f"CREATE UNIQUE INDEX IF NOT EXISTS tag_settings_key ON tag_settings(key, {LIVE})",
    *version_indexes("tags"),
    *version_indexes("tagged"),
    *version_indexes("tag_settings"),
    "CREATE TRIGGER IF NOT EXISTS items_retire_tags AFTER UPDATE OF removed_gen ON items "
    "WHEN new.removed_gen IS NOT NULL AND old.removed_gen IS NULL BEGIN "
    f"{_RETIRE.format(t='tags')} {_RETIRE.format(t='tagged')} END",
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


def settings(conn: sqlite3.Connection, vis: str) -> str | None:
    """The fingerprint of the settings the stored tags were made with; None if never tagged."""
    if not has_tables(conn):
        return None
    query = f"SELECT value FROM tag_settings WHERE key='fingerprint' AND {vis}"
    row = conn.execute(query).fetchone()
    return None if row is None else str(row[0])


def reset(conn: sqlite3.Connection, fingerprint: str, pending: int) -> None:
    """Forget every tag and record the settings the next tags will be made with."""
    for table in ("tags", "tagged", "tag_settings"):
        retire(conn, table, "1", (), pending)
    conn.execute(
        "INSERT INTO tag_settings (key, value, added_gen) VALUES ('fingerprint', ?, ?)",
        (fingerprint, int(pending)),
    )


def put(conn: sqlite3.Connection, tags: dict[int, Sequence[Tag]], pending: int) -> None:
    """Store the tags of these items (replacing any they had) and mark them tagged."""
    ids = [int(i) for i in tags]
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        marks = ",".join("?" * len(batch))
        retire(conn, "tags", f"id IN ({marks})", batch, pending)
        retire(conn, "tagged", f"id IN ({marks})", batch, pending)
    p = int(pending)
    conn.executemany("INSERT INTO tagged (id, added_gen) VALUES (?, ?)", [(i, p) for i in ids])
    rows = [(int(i), t.label, float(t.prob), p) for i, chosen in tags.items() for t in chosen]
    conn.executemany("INSERT INTO tags (id, label, prob, added_gen) VALUES (?, ?, ?, ?)", rows)


def untagged(conn: sqlite3.Connection, vis: str) -> list[int]:
    """Ids of items not classified with the current settings, ascending."""
    if not has_tables(conn):
        return [int(r[0]) for r in conn.execute(f"SELECT id FROM items WHERE {vis} ORDER BY id")]
    query = (
        f"SELECT id FROM items WHERE {vis} AND id NOT IN (SELECT id FROM tagged WHERE {vis}) "
        "ORDER BY id"
    )
    return [int(r[0]) for r in conn.execute(query)]


def tags_for(conn: sqlite3.Connection, ids: Iterable[int], vis: str) -> dict[int, tuple[Tag, ...]]:
    """Tags of the given ids, most probable first; untagged ids are left out."""
    if not has_tables(conn):
        return {}
    wanted = list(dict.fromkeys(int(i) for i in ids))
    found: dict[int, list[Tag]] = {}
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        marks = ",".join("?" * len(batch))
        query = (
            f"SELECT id, label, prob FROM tags WHERE id IN ({marks}) AND {vis} "
            "ORDER BY id, prob DESC"
        )
        for item, label, prob in conn.execute(query, batch):
            found.setdefault(int(item), []).append(Tag(label, float(prob)))
    return {item: tuple(chosen) for item, chosen in found.items()}

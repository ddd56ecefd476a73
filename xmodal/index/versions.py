"""Row versions in the catalog: every row carries the generation that added and that removed it.

The catalog is one SQLite database shared by all generations (``xmodal.index.catalog``). Instead
of copying it per commit, each versioned table has two columns: ``added_gen`` (the generation
whose commit inserted the row) and ``removed_gen`` (the one whose commit retired it; NULL while
live). A reader of generation ``g`` sees exactly the rows with ``added_gen <= g`` and
``removed_gen`` NULL or ``> g`` (``visible``), whatever the writer has committed since.

The writer stages the changes of the next generation ``p`` with rows tagged ``p``: a row it adds
and retires again before committing is simply deleted (nobody else can see it), any other row it
retires gets ``removed_gen = p``. A commit whose manifest switch never happened leaves rows of a
generation that never became current: the next writer undoes them (``discard_after``) before
doing anything else, and readers never see them meanwhile because they filter by their own
generation.

Retired rows are deleted for good once ``RETAIN`` generations have passed (``purge``): a reader
still holding a generation that old loses those rows (its hits on them are dropped). Readers are
expected to reopen now and then; a reader pinned to a generation more than ``RETAIN`` commits old
is not supported.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# Generations a retired row outlives; see the module docstring.
RETAIN = 16
# Tables whose rows are versioned (items first: its triggers handle tags and keywords).
TABLES = ("items", "tags", "tagged", "tag_settings", "ledger", "runs")
COLUMNS = "added_gen INTEGER NOT NULL, removed_gen INTEGER"
# Keys unique among live rows and, per retiring generation, among retired ones; written as an
# expression index so that lookups by key use it whatever generation the reader holds.
LIVE = "ifnull(removed_gen, -1)"


def visible(generation: int, alias: str = "") -> str:
    """SQL condition: the row is part of ``generation`` (an int, inlined: never user input)."""
    g, a = int(generation), f"{alias}." if alias else ""
    return f"({a}added_gen <= {g} AND ({a}removed_gen IS NULL OR {a}removed_gen > {g}))"


def version_indexes(table: str) -> tuple[str, ...]:
    """Indexes that keep undoing and purging cheap: both are range scans on a generation."""
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_added ON {table}(added_gen)",
        f"CREATE INDEX IF NOT EXISTS {table}_removed ON {table}(removed_gen)",
    )


def retire(conn: sqlite3.Connection, table: str, where: str, params: Sequence, pending: int) -> int:
    """Retire the live rows matching ``where`` in the pending generation; returns how many."""
    p = int(pending)
    dropped = conn.execute(
        f"DELETE FROM {table} WHERE added_gen = {p} AND removed_gen IS NULL AND ({where})", params
    ).rowcount
    marked = conn.execute(
        f"UPDATE {table} SET removed_gen = {p} WHERE removed_gen IS NULL AND ({where})", params
    ).rowcount
    return dropped + marked


def discard_after(conn: sqlite3.Connection, generation: int) -> int:
    """Undo every change of generations after ``generation`` (they never became current)."""
    g, undone = int(generation), 0
    for table in TABLES:
        undone += conn.execute(f"DELETE FROM {table} WHERE added_gen > {g}").rowcount
        undone += conn.execute(
            f"UPDATE {table} SET removed_gen = NULL WHERE removed_gen > {g}"
        ).rowcount
    return undone


def purge(conn: sqlite3.Connection, generation: int) -> int:
    """Delete rows retired ``RETAIN`` or more generations before ``generation``."""
    before, purged = int(generation) - RETAIN, 0
    for table in TABLES:
        purged += conn.execute(f"DELETE FROM {table} WHERE removed_gen <= {before}").rowcount
    return purged

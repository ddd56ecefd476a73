"""The SQLite catalog: what is known about each indexed item, keyed by the same ids as FAISS.

Each generation has its own immutable catalog file. Readers open it with ``mode=ro&immutable=1``:
the file never changes under its name, so SQLite may skip locking entirely and a writer's commit
can never disturb them. A writer edits a private working copy (a temp file, journal in memory: a
crash only loses the copy, never the committed file) that is published as the next generation.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from xmodal.index.filters import Filter
from xmodal.index.records import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER,
    mtime REAL,
    caption TEXT,
    width INTEGER,
    height INTEGER,
    content_hash TEXT
)
"""
# Catalogs written before content hashes existed lack the column: readers select NULL in its place
# and writers add it to their working copy (a nullable column: old rows simply have no hash).
_COLUMNS = "id, path, size, mtime, caption, width, height, content_hash"
_COLUMNS_V1 = "id, path, size, mtime, caption, width, height, NULL"
_HASH_INDEX = "CREATE INDEX IF NOT EXISTS items_content_hash ON items(content_hash)"
# Stay well below SQLITE_MAX_VARIABLE_NUMBER of old SQLite builds (999).
_BATCH = 500


def _batches(values: Sequence, size: int = _BATCH) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    # One Collection handle guards its catalog with its own lock, so threads may share it.
    return sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None)


class Catalog:
    """One open catalog: read-only on a committed file, or editable on a working copy."""

    def __init__(self, conn: sqlite3.Connection, work_path: Path | None = None) -> None:
        self._conn = conn
        self._work_path = work_path
        names = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        self._has_hash = "content_hash" in names

    @classmethod
    def open_committed(cls, path: Path | None) -> Catalog:
        """Open a generation's catalog read-only; ``None`` (no files yet) gives an empty one."""
        if path is None:
            conn = _connect(":memory:", uri=False)
            conn.execute(SCHEMA)
            return cls(conn)
        conn = _connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        conn.execute("SELECT count(*) FROM items").fetchone()  # fail now, not at first search
        return cls(conn)

    @classmethod
    def open_working_copy(cls, committed: Path | None, work_path: Path) -> Catalog:
        """Copy the committed catalog to ``work_path`` and open the copy for editing."""
        if committed is not None:
            shutil.copyfile(committed, work_path)
        conn = _connect(str(work_path), uri=False)
        # Durability comes from fsync + rename at commit; the copy itself is disposable, so the
        # journal lives in memory (rollback still works, no -journal files appear on disk).
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(SCHEMA)
        names = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        if "content_hash" not in names:
            conn.execute("ALTER TABLE items ADD COLUMN content_hash TEXT")
        conn.execute(_HASH_INDEX)
        return cls(conn, work_path)

    @property
    def editable(self) -> bool:
        """True for a working copy."""
        return self._work_path is not None

    def put(self, ids: Sequence[int], records: Sequence[Record]) -> list[int]:
        """Insert rows; a path that is already present is replaced. Returns the replaced ids."""
        paths = [record.path for record in records]
        replaced = list(self.ids_for_paths(paths).values())
        rows = [
            (int(i), r.path, r.size, r.mtime, r.caption, r.width, r.height, r.content_hash)
            for i, r in zip(ids, records, strict=True)
        ]
        with self._transaction():
            self._delete(replaced)
            self._conn.executemany(f"INSERT INTO items ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows)
        return replaced

    def delete(self, ids: Sequence[int]) -> int:
        """Delete rows by id; returns how many existed."""
        with self._transaction():
            return self._delete(ids)

    def _delete(self, ids: Sequence[int]) -> int:
        removed = 0
        for batch in _batches([int(i) for i in ids]):
            marks = ",".join("?" * len(batch))
            removed += self._conn.execute(
                f"DELETE FROM items WHERE id IN ({marks})", batch
            ).rowcount
        return removed

    def ids_for_paths(self, paths: Iterable[str]) -> dict[str, int]:
        """Map the given paths that are catalogued to their ids."""
        found: dict[str, int] = {}
        for batch in _batches(list(dict.fromkeys(paths))):
            marks = ",".join("?" * len(batch))
            query = f"SELECT path, id FROM items WHERE path IN ({marks})"
            found.update(self._conn.execute(query, batch).fetchall())
        return found

    def get_records(self, ids: Iterable[int]) -> dict[int, Record]:
        """Fetch the records of the given ids; unknown ids are left out."""
        found: dict[int, Record] = {}
        for batch in _batches(list(dict.fromkeys(int(i) for i in ids))):
            marks = ",".join("?" * len(batch))
            columns = _COLUMNS if self._has_hash else _COLUMNS_V1
            query = f"SELECT {columns} FROM items WHERE id IN ({marks})"
            for row in self._conn.execute(query, batch):
                found[row[0]] = Record(*row[1:])
        return found

    def ids_where(self, where: Filter) -> np.ndarray:
        """Sorted ids of the rows matching ``where`` (fixed SQL fragments, values as parameters)."""
        sql, params = where.sql()
        rows = self._conn.execute(f"SELECT id FROM items WHERE {sql} ORDER BY id", params)
        return np.fromiter((row[0] for row in rows), np.int64)

    def ids_for_hashes(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """Ids per content hash for the given hashes; empty for catalogs without hashes."""
        found: dict[str, list[int]] = {}
        if not self._has_hash:
            return found
        for batch in _batches([h for h in dict.fromkeys(hashes) if h]):
            marks = ",".join("?" * len(batch))
            query = f"SELECT content_hash, id FROM items WHERE content_hash IN ({marks})"
            for digest, item_id in self._conn.execute(query + " ORDER BY id", batch):
                found.setdefault(digest, []).append(item_id)
        return found

    def count(self) -> int:
        """Number of rows."""
        return int(self._conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def finish(self) -> Path:
        """Close the working copy and hand back its path, ready to be published."""
        if self._work_path is None:
            raise RuntimeError("finish() needs a working copy")
        self._conn.close()
        path, self._work_path = self._work_path, None
        return path

    def close(self) -> None:
        """Close the connection; a working copy is left for the caller to delete or publish."""
        self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction per batch of edits; a failing batch leaves the copy as it was."""
        if self._work_path is None:
            raise RuntimeError("the catalog is read-only; open a working copy first")
        self._conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

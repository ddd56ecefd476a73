"""The SQLite catalog: what is known about each indexed item, keyed by the same ids as FAISS.

Each generation has its own immutable catalog file. Readers open it with ``mode=ro&immutable=1``:
the file never changes under its name, so SQLite may skip locking entirely and a writer's commit
can never disturb them. A writer edits a private working copy (a temp file, journal in memory: a
crash only loses the copy, never the committed file) that is published as the next generation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from xmodal.errors import CollectionError, FilterError
from xmodal.index import keywords, ledger, tagstore
from xmodal.index.durable import write_failed
from xmodal.index.filters import Filter
from xmodal.index.ledger import LedgerEntry, RunRecord
from xmodal.index.pathtext import from_db, to_db
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
        self._has_ledger = ledger.has_tables(conn)

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
            try:
                shutil.copyfile(committed, work_path)
            except OSError as exc:
                work_path.unlink(missing_ok=True)
                raise write_failed(work_path, exc) from exc
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
        ledger.create_tables(conn)
        tagstore.create_tables(conn)
        keywords.create_tables(conn)
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
            (int(i), to_db(r.path), r.size, r.mtime, r.caption, r.width, r.height, r.content_hash)
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
        for batch in _batches([to_db(p) for p in dict.fromkeys(paths)]):
            marks = ",".join("?" * len(batch))
            query = f"SELECT path, id FROM items WHERE path IN ({marks})"
            found.update((from_db(p), i) for p, i in self._conn.execute(query, batch))
        return found

    def get_records(self, ids: Iterable[int]) -> dict[int, Record]:
        """Fetch the records of the given ids; unknown ids are left out."""
        found: dict[int, Record] = {}
        for batch in _batches(list(dict.fromkeys(int(i) for i in ids))):
            marks = ",".join("?" * len(batch))
            columns = _COLUMNS if self._has_hash else _COLUMNS_V1
            query = f"SELECT {columns} FROM items WHERE id IN ({marks})"
            for row in self._conn.execute(query, batch):
                found[row[0]] = Record(from_db(row[1]), *row[2:])
        return found

    def ids_where(self, where: Filter) -> np.ndarray:
        """Sorted ids of the rows matching ``where`` (fixed SQL fragments, values as parameters)."""
        sql, params = self._where_sql(where)
        rows = self._conn.execute(f"SELECT id FROM items WHERE {sql} ORDER BY id", params)
        return np.fromiter((row[0] for row in rows), np.int64)

    def _where_sql(self, where: Filter) -> tuple[str, list]:
        if where.uses_tags and tagstore.settings(self._conn) is None:
            raise FilterError(
                f"filter {str(where)!r}: this collection has no tags yet; "
                "run `xmodal tag -c DIR --labels FILE` first"
            )
        sql, params = where.sql()
        return sql, [to_db(p) if isinstance(p, str) else p for p in params]

    # ----------------------------------------------------------------- tags and keywords
    def tag_settings(self) -> str | None:
        """Fingerprint of the settings the stored tags were made with (None: never tagged)."""
        return tagstore.settings(self._conn)

    def reset_tags(self, fingerprint: str) -> None:
        """Drop every tag; the next tags are made with the settings ``fingerprint`` names."""
        with self._transaction():
            tagstore.reset(self._conn, fingerprint)

    def put_tags(self, tags: dict[int, Sequence[tagstore.Tag]]) -> None:
        """Store these items' tags (an empty list still marks the item as tagged)."""
        with self._transaction():
            tagstore.put(self._conn, tags)

    def untagged_ids(self) -> list[int]:
        return tagstore.untagged(self._conn)

    def tags_for(self, ids: Iterable[int]) -> dict[int, tuple[tagstore.Tag, ...]]:
        return tagstore.tags_for(self._conn, ids)

    def keyword_search(self, text: str, k: int, where: Filter | None) -> list[tuple[int, float]]:
        """``(id, -bm25)`` of the best keyword matches; see ``xmodal.index.keywords``."""
        if not keywords.has_table(self._conn):
            raise CollectionError(
                "this collection was written before keyword search existed; run "
                "`xmodal reindex -c DIR` once to build its keyword index"
            )
        sql = None if where is None or where.empty else self._where_sql(where)
        return keywords.search(self._conn, text, k, sql)

    def has_captions(self) -> bool:
        return keywords.has_captions(self._conn)

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

    def hash_groups(self, where: Filter) -> list[list[int]]:
        """Sorted ids of the rows matching ``where`` that share a content hash, per shared hash."""
        if not self._has_hash:
            return []
        sql, params = where.sql()
        params = [to_db(p) if isinstance(p, str) else p for p in params]
        shared = (
            "SELECT content_hash FROM items WHERE content_hash IS NOT NULL AND "
            f"({sql}) GROUP BY content_hash HAVING count(*) > 1"
        )
        query = (
            f"SELECT content_hash, id FROM items WHERE content_hash IN ({shared}) AND ({sql}) "
            "ORDER BY content_hash, id"
        )
        groups: dict[str, list[int]] = {}
        for digest, item_id in self._conn.execute(query, params + params):
            groups.setdefault(digest, []).append(item_id)
        return list(groups.values())

    # ----------------------------------------------------------------- ledger and runs
    def put_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Record inputs' statuses (one row per uri: a newer entry replaces the older)."""
        with self._transaction():
            ledger.put_entries(self._conn, [_entry_to_db(e) for e in entries])

    def put_run(self, run: RunRecord) -> None:
        """Insert or update one run's row."""
        with self._transaction():
            ledger.put_run(self._conn, run)

    def ledger_for(self, uris: Iterable[str]) -> dict[str, LedgerEntry]:
        """Ledger entries of the given uris that have one."""
        if not self._has_ledger:
            return {}
        found = ledger.entries_for(self._conn, (to_db(uri) for uri in uris))
        return {from_db(uri): _entry_from_db(entry) for uri, entry in found.items()}

    def ledger(self, status: str | None = None, run: int | None = None) -> list[LedgerEntry]:
        """Ledger entries, optionally of one status and/or one run, sorted by uri."""
        if not self._has_ledger:
            return []
        return [_entry_from_db(e) for e in ledger.select_entries(self._conn, status, run)]

    def ledger_counts(self, run: int) -> dict[str, int]:
        """How many inputs the run left in each status."""
        if not self._has_ledger:
            return dict.fromkeys(ledger.STATUSES, 0)
        return ledger.status_counts(self._conn, run)

    def runs(self, last: bool = False) -> list[RunRecord]:
        """Every run, oldest first; only the newest with ``last``."""
        return ledger.select_runs(self._conn, last) if self._has_ledger else []

    def count(self) -> int:
        """Number of rows."""
        return int(self._conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def finish(self) -> Path:
        """Close the working copy and hand back its path, ready to be published.

        The file must be as long as SQLite's own page count says: a write the OS cut short
        (file size limit, full disk) is refused here rather than published.
        """
        if self._work_path is None:
            raise RuntimeError("finish() needs a working copy")
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        expected = pages * self._conn.execute("PRAGMA page_size").fetchone()[0]
        self._conn.close()
        path, self._work_path = self._work_path, None
        size = path.stat().st_size
        if size != expected:
            path.unlink(missing_ok=True)
            raise write_failed(path, OSError(f"{size} bytes on disk, SQLite wrote {expected}"))
        return path

    def close(self) -> None:
        """Close the connection; a working copy is left for the caller to delete or publish."""
        self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction per batch of edits; a failing batch leaves the copy as it was."""
        if self._work_path is None:
            raise RuntimeError("the catalog is read-only; open a working copy first")
        try:
            self._conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):  # SQLite may have rolled back
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # disk full, file size limit, I/O error
            raise CollectionError(
                f"could not write the catalog working copy {self._work_path}: {exc}; nothing was "
                "staged: free disk space or raise the file size limit, then try again"
            ) from exc


def _entry_to_db(entry: LedgerEntry) -> LedgerEntry:
    """Uri and message as stored: a failure's message names its (maybe non-UTF-8) path."""
    if entry.uri.isascii() and (entry.message is None or entry.message.isascii()):
        return entry
    message = to_db(entry.message) if entry.message is not None else None
    return dataclasses.replace(entry, uri=to_db(entry.uri), message=message)


def _entry_from_db(entry: LedgerEntry) -> LedgerEntry:
    if entry.uri.isascii() and (entry.message is None or entry.message.isascii()):
        return entry
    message = from_db(entry.message) if entry.message is not None else None
    return dataclasses.replace(entry, uri=from_db(entry.uri), message=message)

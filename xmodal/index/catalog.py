"""The SQLite catalog: what is known about each indexed item, keyed by the same ids as FAISS.

One database file (``catalog.sqlite``, WAL mode) serves every generation: its rows carry the
generation that added and that retired them (``xmodal.index.versions``), and a ``Catalog`` sees
exactly the rows of one generation, its *view*. Readers open the file read-only at the manifest's
generation and keep seeing it while a writer commits later ones (WAL readers never block the
writer, nor it them). The writer's view is the pending generation: it stages changes tagged with
it inside one SQLite transaction, which ``commit`` makes durable just before the collection
switches its manifest (``xmodal.index.catalogdb`` opens, creates and upgrades the file).

Catalogs written before versions (one immutable file per generation, format 1 and early format 2)
are read as they are, with every row visible; the next writer copies one into the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from xmodal.errors import CollectionError, FilterError
from xmodal.index import keywords, ledger, tagstore, versions
from xmodal.index.filters import Filter
from xmodal.index.ledger import LedgerEntry, RunRecord
from xmodal.index.pathtext import from_db, to_db
from xmodal.index.records import Record

_COLUMNS = "id, path, size, mtime, caption, width, height, content_hash"
_COLUMNS_V1 = "id, path, size, mtime, caption, width, height, NULL"
# Stay well below SQLITE_MAX_VARIABLE_NUMBER of old SQLite builds (999).
_BATCH = 500


def _batches(values: Sequence, size: int = _BATCH) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Catalog:
    """One open catalog seen at one generation: read-only, or the writer's pending one."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path | None,
        view: int | None,
        *,
        writer: bool = False,
    ) -> None:
        self._conn = conn
        self._path = path
        self._view = view  # None: a catalog written before versions (all rows visible)
        self._writer = writer
        self._count: int | None = None
        names = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
        self._has_hash = "content_hash" in names
        self._has_ledger = ledger.has_tables(conn)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def versioned(self) -> bool:
        """True for the shared, versioned database (False: a pre-versions file or none)."""
        return self._view is not None

    @property
    def editable(self) -> bool:
        """True when the writer has staged changes that the next commit publishes."""
        return self._writer and self._conn.in_transaction

    @property
    def _vis(self) -> str:
        return "1" if self._view is None else versions.visible(self._view)

    @property
    def _pending(self) -> int:
        if not self._writer or self._view is None:
            raise RuntimeError("the catalog is read-only; open it as the writer first")
        return self._view

    def put(self, ids: Sequence[int], records: Sequence[Record]) -> list[int]:
        """Insert rows; a path that is already present is replaced. Returns the replaced ids."""
        paths = [record.path for record in records]
        replaced = list(self.ids_for_paths(paths).values())
        pending, before = self._pending, self.count()
        rows = [
            (int(i), to_db(r.path), r.size, r.mtime, r.caption, r.width, r.height, r.content_hash,
             pending)
            for i, r in zip(ids, records, strict=True)
        ]  # fmt: skip
        with self._edit():
            removed = self._retire(replaced)
            self._conn.executemany(
                f"INSERT INTO items ({_COLUMNS}, added_gen) VALUES (?,?,?,?,?,?,?,?,?)", rows
            )
            self._count = before + len(rows) - removed
        return replaced

    def delete(self, ids: Sequence[int]) -> int:
        """Retire rows by id; returns how many existed."""
        before = self.count()
        with self._edit():
            removed = self._retire(ids)
            self._count = before - removed
        return removed

    def _retire(self, ids: Sequence[int]) -> int:
        removed = 0
        for batch in _batches([int(i) for i in ids]):
            where = f"id IN ({','.join('?' * len(batch))})"
            removed += versions.retire(self._conn, "items", where, batch, self._pending)
        return removed

    def ids_for_paths(self, paths: Iterable[str]) -> dict[str, int]:
        """Map the given paths that are catalogued to their ids."""
        found: dict[str, int] = {}
        for batch in _batches([to_db(p) for p in dict.fromkeys(paths)]):
            marks = ",".join("?" * len(batch))
            query = f"SELECT path, id FROM items WHERE path IN ({marks}) AND {self._vis}"
            found.update((from_db(p), i) for p, i in self._conn.execute(query, batch))
        return found

    def get_records(self, ids: Iterable[int]) -> dict[int, Record]:
        """Fetch the records of the given ids; unknown ids are left out."""
        found: dict[int, Record] = {}
        columns = _COLUMNS if self._has_hash else _COLUMNS_V1
        for batch in _batches(list(dict.fromkeys(int(i) for i in ids))):
            marks = ",".join("?" * len(batch))
            query = f"SELECT {columns} FROM items WHERE id IN ({marks}) AND {self._vis}"
            for row in self._conn.execute(query, batch):
                found[row[0]] = Record(from_db(row[1]), *row[2:])
        return found

    def ids_where(self, where: Filter) -> np.ndarray:
        """Sorted ids of the rows matching ``where`` (fixed SQL fragments, values as parameters)."""
        sql, params = self._where_sql(where)
        query = f"SELECT id FROM items WHERE {self._vis} AND ({sql}) ORDER BY id"
        return np.fromiter((row[0] for row in self._conn.execute(query, params)), np.int64)

    def _where_sql(self, where: Filter) -> tuple[str, list]:
        if where.uses_tags and self.tag_settings() is None:
            raise FilterError(
                f"filter {str(where)!r}: this collection has no tags yet; "
                "run `xmodal tag -c DIR --labels FILE` first"
            )
        sql, params = where.sql(self._vis)
        return sql, [to_db(p) if isinstance(p, str) else p for p in params]

    # ----------------------------------------------------------------- tags and keywords
    def tag_settings(self) -> str | None:
        """Fingerprint of the settings the stored tags were made with (None: never tagged)."""
        return tagstore.settings(self._conn, self._vis)

    def reset_tags(self, fingerprint: str) -> None:
        """Drop every tag; the next tags are made with the settings ``fingerprint`` names."""
        with self._edit():
            tagstore.reset(self._conn, fingerprint, self._pending)

    def put_tags(self, tags: dict[int, Sequence[tagstore.Tag]]) -> None:
        """Store these items' tags (an empty list still marks the item as tagged)."""
        with self._edit():
            tagstore.put(self._conn, tags, self._pending)

    def untagged_ids(self) -> list[int]:
        return tagstore.untagged(self._conn, self._vis)

    def tags_for(self, ids: Iterable[int]) -> dict[int, tuple[tagstore.Tag, ...]]:
        return tagstore.tags_for(self._conn, ids, self._vis)

    def keyword_search(self, text: str, k: int, where: Filter | None) -> list[tuple[int, float]]:
        """``(id, -bm25)`` of the best keyword matches; see ``xmodal.index.keywords``."""
        if not keywords.has_table(self._conn):
            raise CollectionError(
                "this collection was written before keyword search existed; run "
                "`xmodal reindex -c DIR` once to build its keyword index"
            )
        sql = ("1", []) if where is None or where.empty else self._where_sql(where)
        return keywords.search(self._conn, text, k, sql, self._vis)

    def has_captions(self) -> bool:
        return keywords.has_captions(self._conn, self._vis)

    def ids_for_hashes(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """Ids per content hash for the given hashes; empty for catalogs without hashes."""
        found: dict[str, list[int]] = {}
        if not self._has_hash:
            return found
        for batch in _batches([h for h in dict.fromkeys(hashes) if h]):
            marks = ",".join("?" * len(batch))
            query = (
                f"SELECT content_hash, id FROM items WHERE content_hash IN ({marks}) "
                f"AND {self._vis} ORDER BY id"
            )
            for digest, item_id in self._conn.execute(query, batch):
                found.setdefault(digest, []).append(item_id)
        return found

    def hash_groups(self, where: Filter) -> list[list[int]]:
        """Sorted ids of the rows matching ``where`` that share a content hash, per shared hash."""
        if not self._has_hash:
            return []
        sql, params = where.sql(self._vis)
        params = [to_db(p) if isinstance(p, str) else p for p in params]
        rows = f"{self._vis} AND ({sql})"
        shared = (
            "SELECT content_hash FROM items WHERE content_hash IS NOT NULL AND "
            f"{rows} GROUP BY content_hash HAVING count(*) > 1"
        )
        query = (
            f"SELECT content_hash, id FROM items WHERE content_hash IN ({shared}) AND {rows} "
            "ORDER BY content_hash, id"
        )
        groups: dict[str, list[int]] = {}
        for digest, item_id in self._conn.execute(query, params + params):
            groups.setdefault(digest, []).append(item_id)
        return list(groups.values())

    # ----------------------------------------------------------------- ledger and runs
    def put_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Record inputs' statuses (one row per uri: a newer entry replaces the older)."""
        with self._edit():
            ledger.put_entries(self._conn, [_entry_to_db(e) for e in entries], self._pending)

    def put_run(self, run: RunRecord) -> None:
        """Insert or update one run's row."""
        with self._edit():
            ledger.put_run(self._conn, run, self._pending)

    def ledger_for(self, uris: Iterable[str]) -> dict[str, LedgerEntry]:
        """Ledger entries of the given uris that have one."""
        if not self._has_ledger:
            return {}
        found = ledger.entries_for(self._conn, (to_db(uri) for uri in uris), self._vis)
        return {from_db(uri): _entry_from_db(entry) for uri, entry in found.items()}

    def ledger(self, status: str | None = None, run: int | None = None) -> list[LedgerEntry]:
        """Ledger entries, optionally of one status and/or one run, sorted by uri."""
        if not self._has_ledger:
            return []
        found = ledger.select_entries(self._conn, status, run, self._vis)
        return [_entry_from_db(e) for e in found]

    def ledger_counts(self, run: int) -> dict[str, int]:
        """How many inputs the run left in each status."""
        if not self._has_ledger:
            return dict.fromkeys(ledger.STATUSES, 0)
        return ledger.status_counts(self._conn, run, self._vis)

    def runs(self, last: bool = False) -> list[RunRecord]:
        """Every run, oldest first; only the newest with ``last``."""
        return ledger.select_runs(self._conn, self._vis, last) if self._has_ledger else []

    def count(self) -> int:
        """Number of rows in the view (counted once, then kept up to date by the writer)."""
        if self._count is None:
            query = f"SELECT count(*) FROM items WHERE {self._vis}"
            self._count = int(self._conn.execute(query).fetchone()[0])
        return self._count

    # ----------------------------------------------------------------- the writer's transaction
    def commit(self, generation: int) -> None:
        """Make the staged changes durable as rows of ``generation`` (the pending one).

        Also purges rows retired long ago (``versions.RETAIN``). The collection switches its
        manifest only after this returns; until then readers do not look at these rows.
        """
        if generation != self._pending:
            raise RuntimeError(f"pending generation is {self._pending}, not {generation}")
        with self._edit():
            versions.purge(self._conn, generation)
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise self._write_error(exc, "nothing was committed") from exc
        self._view = generation + 1

    def rollback(self) -> None:
        """Drop what was staged since the last commit."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        self._count = None

    def discard_after(self, generation: int) -> None:
        """Undo committed rows of generations after ``generation`` (their manifest never came)."""
        self.rollback()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            versions.discard_after(self._conn, generation)
            self._conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._view, self._count = generation + 1, None

    def close(self) -> None:
        """Close the connection; staged changes are rolled back."""
        self.rollback()
        self._conn.close()

    @contextlib.contextmanager
    def _edit(self) -> Iterator[None]:
        """One savepoint per batch of edits inside the writer's transaction.

        A failing batch leaves the staged state as it was before the batch; if SQLite had to
        roll back the whole transaction (disk full, I/O error), everything staged since the last
        commit is gone and the error says so (the collection then drops its staged vectors).
        """
        self._pending  # noqa: B018 (refuses read-only catalogs)
        try:
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("SAVEPOINT edit")
            try:
                yield
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK TO edit")
                    self._conn.execute("RELEASE edit")
                raise
            self._conn.execute("RELEASE edit")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                raise self._write_error(exc, "nothing of this change was staged") from exc
            self._count = None
            raise self._write_error(
                exc, "the changes staged since the last commit were dropped"
            ) from exc

    def _write_error(self, exc: sqlite3.Error, what: str) -> CollectionError:
        return CollectionError(
            f"could not write {self._path}: {exc}; {what}: free disk space or raise the file "
            "size limit, then try again"
        )


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

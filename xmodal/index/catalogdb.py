"""Opening the catalog database: readers, the writer, a new file, and upgrades of old catalogs.

The database is ``catalog.sqlite`` in the collection directory, in WAL mode with
``synchronous=FULL`` (a commit is on disk when ``COMMIT`` returns). A random *identity* stored in
its ``meta`` table at creation is recorded in the manifest (``catalog_id``), so a catalog file of
another collection put in its place is refused on open, as a wrong checksum used to be.

Catalogs written before versions (``catalog.gNNNNNN.sqlite``, one immutable file per generation)
are copied once into a new database by the next writer, every row tagged with the current
generation; the manifest switches to the database with that writer's commit. Until then the old
file stays current, and a crash just leaves a database that no manifest names, which the next
writer replaces.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import keywords, ledger, tagstore
from xmodal.index.catalog import Catalog
from xmodal.index.durable import fsync_path
from xmodal.index.manifest import CATALOG_NAME
from xmodal.index.versions import COLUMNS, LIVE, version_indexes

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
    "size INTEGER, mtime REAL, caption TEXT, width INTEGER, height INTEGER, "
    f"content_hash TEXT, {COLUMNS})",
    f"CREATE UNIQUE INDEX IF NOT EXISTS items_path ON items(path, {LIVE})",
    "CREATE INDEX IF NOT EXISTS items_content_hash ON items(content_hash)",
    *version_indexes("items"),
)
# Old table -> columns copied by an upgrade (absent tables and columns are skipped / NULL).
_COPIED = {
    "items": ("id", "path", "size", "mtime", "caption", "width", "height", "content_hash"),
    "ledger": ("uri", "status", "reason", "message", "size", "mtime", "run"),
    "runs": ("id", "started", "ended", "finished", "sources", "commit_every", "counts", "stages"),
    "tags": ("id", "label", "prob"),
    "tagged": ("id",),
    "tag_settings": ("key", "value"),
}


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    # One Collection handle guards its catalog with its own lock, so threads may share it.
    target = f"{path.resolve().as_uri()}?mode={mode}"
    return sqlite3.connect(target, uri=True, check_same_thread=False, isolation_level=None)


def empty(generation: int) -> Catalog:
    """The catalog of a collection without one yet: no rows."""
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    _create_tables(conn)
    return Catalog(conn, None, generation)


def open_legacy(path: Path) -> Catalog:
    """A catalog file written before versions, read-only (it never changes)."""
    conn = _connect(path, "ro&immutable=1")
    conn.execute("SELECT count(*) FROM items").fetchone()  # fail now, not at first search
    return Catalog(conn, path, None)


def open_reader(directory: Path, generation: int, identity: str) -> Catalog:
    """The database seen at ``generation``, read-only; it must be the one the manifest names."""
    path = directory / CATALOG_NAME
    if not path.exists():
        raise FileNotFoundError(path)
    conn = _connect(path, "ro")
    try:
        _check_identity(conn, path, identity)
    except BaseException:
        conn.close()
        raise
    return Catalog(conn, path, generation)


def open_writer(directory: Path, generation: int, identity: str) -> Catalog:
    """The writer's catalog: rows of generations after ``generation`` are undone first."""
    path = directory / CATALOG_NAME
    if not path.exists():
        raise FileNotFoundError(path)
    conn = _connect(path, "rw")
    try:
        _check_identity(conn, path, identity)
        _writer_pragmas(conn)
        catalog = Catalog(conn, path, generation + 1, writer=True)
        catalog.discard_after(generation)
    except sqlite3.Error as exc:
        conn.close()
        raise CollectionError(f"could not open the catalog {path} for writing: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return catalog


def create(directory: Path, generation: int, legacy: Path | None) -> tuple[Catalog, str]:
    """A new database (copying ``legacy``'s rows as of ``generation``) and its identity.

    Any file already under the name belongs to no manifest (an overwritten collection, or an
    upgrade that crashed): it is replaced. Called only by the lock holder.
    """
    path = directory / CATALOG_NAME
    for name in (CATALOG_NAME, f"{CATALOG_NAME}-wal", f"{CATALOG_NAME}-shm"):
        (directory / name).unlink(missing_ok=True)
    identity = uuid.uuid4().hex
    conn = _connect(path, "rwc")
    try:
        _writer_pragmas(conn)
        if legacy is not None:
            conn.execute("ATTACH DATABASE ? AS old", (f"{legacy.resolve().as_uri()}?mode=ro",))
        conn.execute("BEGIN IMMEDIATE")
        _create_tables(conn)
        conn.execute("INSERT INTO meta (key, value) VALUES ('identity', ?)", (identity,))
        if legacy is not None:
            _copy_legacy(conn, generation)
        conn.execute("COMMIT")
        if legacy is not None:
            conn.execute("DETACH DATABASE old")
        fsync_path(directory)  # the new file's name must outlive a crash before the manifest
    except sqlite3.Error as exc:
        conn.close()
        raise CollectionError(
            f"could not write {path}: {exc}; nothing was replaced (the previous version stays "
            "current): free disk space or raise the file size limit, then try again"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return Catalog(conn, path, generation + 1, writer=True), identity


def _writer_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)
    ledger.create_tables(conn)
    tagstore.create_tables(conn)
    keywords.create_tables(conn)


def _copy_legacy(conn: sqlite3.Connection, generation: int) -> None:
    """Every row of the attached old catalog, as rows added in ``generation``."""
    tables = {row[0] for row in conn.execute("SELECT name FROM old.sqlite_master")}
    for table, columns in _COPIED.items():
        if table not in tables:
            continue
        present = {row[1] for row in conn.execute(f"PRAGMA old.table_info({table})")}
        chosen = ", ".join(c if c in present else "NULL" for c in columns)
        conn.execute(
            f"INSERT INTO main.{table} ({', '.join(columns)}, added_gen) "
            f"SELECT {chosen}, {int(generation)} FROM old.{table}"
        )


def _check_identity(conn: sqlite3.Connection, path: Path, identity: str) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CollectionCorruptError(f"collection file {path} is not a readable catalog") from exc
    found = None if row is None else str(row[0])
    if found != identity:
        raise CollectionCorruptError(
            f"collection file {path} is damaged: it is catalog {found}, the manifest names "
            f"catalog {identity} (a catalog of another collection); restore the directory from "
            "a backup or rebuild the collection"
        )

"""The ledger: what became of every input of a batch run, stored in the catalog.

Two tables live in the catalog database beside ``items``, versioned like them
(``xmodal.index.versions``), so a chunk's ledger rows are published by the same commit as its
vectors and a reader sees the ledger of its own generation: ``ledger`` has one live row per
input uri (its status in the run that last saw it) and ``runs`` one per run (counts, per-stage
seconds and whether it finished). Catalogs written before the ledger existed simply have no rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from xmodal.index.versions import COLUMNS, LIVE, retire, version_indexes

STATUSES = ("indexed", "unchanged", "failed", "skipped")

SCHEMA = (
    f"""
    CREATE TABLE IF NOT EXISTS ledger (
        uri TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        message TEXT,
        size INTEGER,
        mtime REAL,
        run INTEGER NOT NULL,
        {COLUMNS}
    )
    """,
    f"CREATE UNIQUE INDEX IF NOT EXISTS ledger_uri ON ledger(uri, {LIVE})",
    "CREATE INDEX IF NOT EXISTS ledger_run_status ON ledger(run, status)",
    f"""
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER NOT NULL,
        started TEXT NOT NULL,
        ended TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        sources TEXT NOT NULL,
        commit_every INTEGER,
        counts TEXT NOT NULL,
        stages TEXT NOT NULL,
        {COLUMNS}
    )
    """,
    f"CREATE UNIQUE INDEX IF NOT EXISTS runs_id ON runs(id, {LIVE})",
    *version_indexes("ledger"),
    *version_indexes("runs"),
)
_LEDGER_COLUMNS = "uri, status, reason, message, size, mtime, run"
_RUN_COLUMNS = "id, started, ended, finished, sources, commit_every, counts, stages"
_BATCH = 500


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One input's fate in the run that last saw it (``run`` is that run's id)."""

    uri: str
    status: str  # indexed | unchanged | failed | skipped
    reason: str | None = None
    message: str | None = None
    size: int | None = None
    mtime: float | None = None
    run: int = 0


@dataclass(frozen=True)
class RunRecord:
    """One batch run: when, over what, how far it got and what it counted.

    ``counts`` holds seen, indexed, unchanged, failed, skipped (seen is their sum) plus reused
    and pruned; ``stages`` the seconds spent per stage. An unfinished run was interrupted.
    """

    id: int
    started: str
    sources: tuple[str, ...]
    ended: str | None = None
    finished: bool = False
    commit_every: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)


def has_tables(conn: sqlite3.Connection) -> bool:
    query = "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('ledger','runs')"
    return conn.execute(query).fetchone()[0] == 2


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def put_entries(conn: sqlite3.Connection, entries: Sequence[LedgerEntry], pending: int) -> None:
    """One live row per uri: a newer entry retires the older (the last of a batch wins)."""
    latest = {e.uri: e for e in entries}
    uris = list(latest)
    for start in range(0, len(uris), _BATCH):
        batch = uris[start : start + _BATCH]
        retire(conn, "ledger", f"uri IN ({','.join('?' * len(batch))})", batch, pending)
    p = int(pending)
    rows = [
        (e.uri, e.status, e.reason, e.message, e.size, e.mtime, e.run, p) for e in latest.values()
    ]
    conn.executemany(
        f"INSERT INTO ledger ({_LEDGER_COLUMNS}, added_gen) VALUES (?,?,?,?,?,?,?,?)", rows
    )


def entries_for(conn: sqlite3.Connection, uris: Iterable[str], vis: str) -> dict[str, LedgerEntry]:
    found: dict[str, LedgerEntry] = {}
    wanted = list(dict.fromkeys(uris))
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        marks = ",".join("?" * len(batch))
        query = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE uri IN ({marks}) AND {vis}"
        found.update((row[0], LedgerEntry(*row)) for row in conn.execute(query, batch))
    return found


def select_entries(
    conn: sqlite3.Connection, status: str | None, run: int | None, vis: str
) -> Iterator[LedgerEntry]:
    clauses, params = [vis], []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if run is not None:
        clauses.append("run = ?")
        params.append(run)
    where = f" WHERE {' AND '.join(clauses)}"
    query = f"SELECT {_LEDGER_COLUMNS} FROM ledger{where} ORDER BY uri"
    for row in conn.execute(query, params):
        yield LedgerEntry(*row)


def status_counts(conn: sqlite3.Connection, run: int, vis: str) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    query = f"SELECT status, count(*) FROM ledger WHERE run = ? AND {vis} GROUP BY status"
    counts.update(conn.execute(query, (run,)).fetchall())
    return counts


def put_run(conn: sqlite3.Connection, run: RunRecord, pending: int) -> None:
    """Insert or update one run's row (an update retires the older version)."""
    retire(conn, "runs", "id = ?", (int(run.id),), pending)
    row = (
        run.id,
        run.started,
        run.ended,
        int(run.finished),
        json.dumps(list(run.sources)),
        run.commit_every,
        json.dumps(run.counts, sort_keys=True),
        json.dumps(run.stages, sort_keys=True),
        int(pending),
    )
    conn.execute(f"INSERT INTO runs ({_RUN_COLUMNS}, added_gen) VALUES (?,?,?,?,?,?,?,?,?)", row)


def select_runs(conn: sqlite3.Connection, vis: str, last: bool = False) -> list[RunRecord]:
    order = " ORDER BY id DESC LIMIT 1" if last else " ORDER BY id"
    query = f"SELECT {_RUN_COLUMNS} FROM runs WHERE {vis}{order}"
    return [_run(row) for row in conn.execute(query)]


def _run(row: tuple) -> RunRecord:
    run_id, started, ended, finished, sources, commit_every, counts, stages = row
    return RunRecord(
        id=run_id,
        started=started,
        sources=tuple(json.loads(sources)),
        ended=ended,
        finished=bool(finished),
        commit_every=commit_every,
        counts=json.loads(counts),
        stages=json.loads(stages),
    )

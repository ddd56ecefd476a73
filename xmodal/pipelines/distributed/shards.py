"""Embedding shards: the durable output of the distributed embedding stage.

Shard ``i`` holds inputs ``[i*S, (i+1)*S)`` of the run, in source order. It is three files under
``COLLECTION/shards/``: ``shard-00000i.npy`` (float32 vectors of the embedded rows),
``shard-00000i.parquet`` (one row per input: uri, status, failure reason, size, content hash) and
``shard-00000i.done.json``, the commit marker, written last. Each is written to a temp file,
fsynced and renamed, so a crash leaves either a whole shard or none.

The marker records a fingerprint of what the shard was computed from (each input's uri, size and
mtime, the encoder's identity, the collection generation it was planned against): a re-run skips
shards whose marker matches and recomputes any other. Shards are a work area: the run deletes a
window's shards once the collection commits that consumed them succeeded (``windows``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xmodal.index.durable import TEMP_PREFIX, Sink, durable_write
from xmodal.pipelines.sources import Item

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
# A row's status: embedded (it has a vector), failed (decoding said why), or not embedded because
# it needed no work when the shard was made (catalogued unchanged, or known to fail).
EMBEDDED, FAILED, NOT_EMBEDDED = "embedded", "failed", "not-embedded"


@dataclass(frozen=True)
class ShardPlan:
    """One shard to compute: its number, its inputs in source order and their fingerprint."""

    index: int
    items: tuple[Item, ...]
    fingerprint: str

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


@dataclass(frozen=True, slots=True)
class ShardRow:
    """What the embedding stage did with one input; ``row`` indexes the shard's vectors."""

    uri: str
    status: str
    row: int = -1
    reason: str | None = None
    message: str | None = None
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None


def plan_shards(items: Iterable[Item], size: int, salt: str, start: int = 0) -> Iterator[ShardPlan]:
    """Cut ``items`` into shards of ``size`` in order, numbered from ``start``; ``salt`` enters
    every fingerprint."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, got {size}")
    batch: list[Item] = []
    index = start
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield _plan(index, batch, salt)
            batch, index = [], index + 1
    if batch:
        yield _plan(index, batch, salt)


def _plan(index: int, items: list[Item], salt: str) -> ShardPlan:
    digest = hashlib.sha256(salt.encode())
    for item in items:
        digest.update(json.dumps([item.uri, item.size, item.mtime]).encode())
    return ShardPlan(index, tuple(items), digest.hexdigest())


class ShardStore:
    """The ``shards`` folder of one collection."""

    def __init__(self, collection_dir: Path) -> None:
        self.directory = Path(collection_dir) / SHARDS_DIR

    def prepare(self) -> None:
        """Create the folder and drop temp files a killed run left behind."""
        self.directory.mkdir(exist_ok=True)
        for leftover in self.directory.glob(f"{TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)

    def is_done(self, plan: ShardPlan) -> bool:
        marker = self.directory / f"{plan.name}.done.json"
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        return done.get("fingerprint") == plan.fingerprint

    def write(self, plan: ShardPlan, rows: list[ShardRow], vectors: np.ndarray) -> None:
        """Commit one shard: vectors and rows first, the done marker last."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(rows) != len(plan.items):
            raise ValueError(f"{plan.name}: {len(rows)} rows for {len(plan.items)} inputs")
        vectors = np.ascontiguousarray(vectors, np.float32)
        table = pa.Table.from_pylist([asdict(row) for row in rows], schema=_schema())
        durable_write(self.directory, f"{plan.name}.npy", lambda sink: _save(sink, vectors))
        durable_write(
            self.directory, f"{plan.name}.parquet", lambda sink: pq.write_table(table, sink)
        )
        marker = {
            "fingerprint": plan.fingerprint,
            "inputs": len(rows),
            "embedded": int(len(vectors)),
            "failed": sum(row.status == FAILED for row in rows),
        }
        durable_write(
            self.directory,
            f"{plan.name}.done.json",
            lambda sink: sink.write(json.dumps(marker, indent=1).encode()),
        )

    def read(self, plan: ShardPlan) -> tuple[list[ShardRow], np.ndarray]:
        """The rows and vectors of a committed shard, checked against the plan."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.directory / f"{plan.name}.parquet")
        rows = [ShardRow(**row) for row in table.to_pylist()]
        vectors = np.load(self.directory / f"{plan.name}.npy", allow_pickle=False)
        if [row.uri for row in rows] != [item.uri for item in plan.items]:
            raise RuntimeError(f"{self.directory / plan.name} does not hold the planned inputs")
        return rows, vectors

    def drop(self, plans: Iterable[ShardPlan]) -> None:
        """Delete these shards (their rows are committed): the marker first, so a crash in
        between leaves a shard that is simply not done."""
        for plan in plans:
            for suffix in (".done.json", ".npy", ".parquet"):
                (self.directory / f"{plan.name}{suffix}").unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every shard (after the collection committed what they held)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _schema():  # noqa: ANN202  (pyarrow is imported lazily)
    import pyarrow as pa

    return pa.schema(
        [
            ("uri", pa.string()),
            ("status", pa.string()),
            ("row", pa.int64()),
            ("reason", pa.string()),
            ("message", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("content_hash", pa.string()),
        ]
    )


def _save(sink: Sink, array: np.ndarray) -> None:
    np.save(sink, array, allow_pickle=False)

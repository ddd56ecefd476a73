"""Accounting for a batch run: every input ends in the ledger as indexed, unchanged, failed or
skipped, and a run interrupted at any point is resumed, not restarted.

A run is identified by its sources. When the newest run recorded in the collection did not finish
and had the same sources, ``RunBook.start`` resumes it: inputs whose ledger entry already carries
its id were handled (and committed) before the interruption and are passed over, so the resumed
run redoes at most the chunk that was in flight and ends in the state an uninterrupted run would
have reached: same ids, vectors, catalog rows and ledger.

Inputs that failed in an earlier run are not decoded again while their size and mtime are
unchanged (the same bytes fail the same way); they are recorded as failed again with the old
reason. Files that could not be read (``unreadable``: permissions, I/O errors), that hit the
decoding deadline (``timeout``: a stalled mount) or that changed while they were read
(``changed-during-read``) are always retried, as is everything with ``retry_failed``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from xmodal.index import Collection
from xmodal.index.generations import now
from xmodal.index.ledger import STATUSES, LedgerEntry, RunRecord
from xmodal.pipelines.progress import StageTimes, describe
from xmodal.pipelines.sources import Item, Skipped

log = logging.getLogger(__name__)

# Failures of the moment rather than of the bytes: the next run tries these files again.
RETRY_ALWAYS = frozenset({"unreadable", "timeout", "changed-during-read"})
# Chunks that only record unchanged or skipped inputs cost no model time to redo: they are
# committed together, so a re-run over a million unchanged files does not copy the catalog 500x.
LEDGER_ONLY_COMMIT = 65536
_COUNTS = ("seen", *STATUSES, "reused", "pruned")


@dataclass(frozen=True)
class Failure:
    uri: str
    reason: str
    message: str


@dataclass(frozen=True)
class IndexReport:
    """What a run did with every input: seen = indexed + unchanged + failed + skipped.

    ``seen`` counts distinct inputs. ``reused`` counts the indexed files whose bytes were already
    catalogued (moved, renamed or copied): they took the stored vector without being encoded.
    ``pruned`` counts items removed because their files no longer exist. A ``resumed`` run
    continues run ``run`` after an interruption: its counts, ``seconds`` and ``stages`` cover
    every attempt.
    """

    seen: int
    indexed: int
    unchanged: int
    failed: int
    seconds: float
    failures: tuple[Failure, ...] = field(default=(), repr=False)
    reused: int = 0
    pruned: int = 0
    skipped: int = 0
    run: int = 0
    resumed: bool = False
    stages: dict[str, float] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """E.g. 'seen 24: indexed 20, unchanged 0, failed 0, skipped 4 (not-an-image 3,
        hidden 1) in 2.0 s (10.0 images/s)'; a run that indexed nothing has no rate to show."""
        rate = f"{self.images_per_s:.1f} images/s" if self.indexed else "nothing new to embed"
        return (
            f"seen {self.seen}: indexed {self.indexed}, unchanged {self.unchanged}, "
            f"failed {self.failed}, skipped {self.skipped}{by_reason(self.skipped_reasons)} "
            f"in {self.seconds:.1f} s ({rate})"
        ) + (f", pruned {self.pruned}" if self.pruned else "")

    def stages_line(self) -> str:
        return f"stages: {describe(self.stages)}"


def by_reason(counts: dict[str, int]) -> str:
    """' (not-an-image 3, hidden 1)': commonest first, then by name; '' for none."""
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return f" ({', '.join(f'{reason} {n}' for reason, n in ranked)})" if ranked else ""


def run_identity(sources: Sequence[str | os.PathLike]) -> tuple[str, ...]:
    """Sources as absolute paths (``@list`` keeps its ``@``): a run's identity across cwds."""
    names = []
    for source in map(str, sources):
        at = "@" if source.startswith("@") else ""
        names.append(at + os.path.abspath(os.path.expanduser(source.removeprefix("@"))))
    return tuple(names)


class RunBook:
    """The ledger entries and counts of one run, staged per chunk and committed with it."""

    def __init__(self, collection: Collection, run: RunRecord, resumed: bool) -> None:
        self.collection = collection
        self.run = run
        self.resumed = resumed
        self.counts = dict.fromkeys(_COUNTS, 0) | run.counts
        stages = dict(run.stages)
        self._earlier_wall = stages.pop("wall", 0.0)
        self.times = StageTimes(stages)
        self._started = time.perf_counter()
        self._entries: list[LedgerEntry] = []
        self._uncommitted = 0

    @classmethod
    def start(cls, collection: Collection, sources: Sequence[str], commit_every: int) -> RunBook:
        """Resume the newest run if it was interrupted over the same sources, else start one."""
        identity = run_identity(sources)
        last = collection.last_run()
        if last is not None and not last.finished and last.sources == identity:
            log.info("resuming interrupted run %d", last.id)
            if last.commit_every != commit_every:
                log.info(
                    "keeping the run's chunk size %s (asked: %d)", last.commit_every, commit_every
                )
            return cls(collection, last, resumed=True)
        run = RunRecord(
            id=last.id + 1 if last else 1,
            started=now(),
            sources=identity,
            commit_every=commit_every,
        )
        return cls(collection, run, resumed=False)

    @property
    def commit_every(self) -> int:
        """The resumed run's chunk size: the same chunks give the same ids and vectors."""
        return int(self.run.commit_every or 2048)

    def expected_total(self) -> int | None:
        """Inputs the last finished run over the same sources saw: a free estimate for ETA."""
        for run in reversed(self.collection.runs()):
            if run.finished and run.sources == self.run.sources:
                return int(run.counts.get("seen", 0)) or None
        return None

    def sort(self, chunk: Sequence[Item | Skipped], retry_failed: bool) -> list[Item]:
        """Record the inputs that need no decoding; return the items to index, in order."""
        unique = list({entry.uri: entry for entry in chunk}.values())
        known = self.collection.ledger_for(entry.uri for entry in unique)
        fresh = [x for x in unique if (e := known.get(x.uri)) is None or e.run != self.run.id]
        items = [x for x in fresh if isinstance(x, Item)]
        changed = self._changed(items)
        todo = []
        for x in fresh:
            entry = known.get(x.uri)
            if isinstance(x, Skipped):
                self.note(LedgerEntry(x.uri, "skipped", x.reason))
            elif x.uri not in changed:
                self.note(self.entry(x, "unchanged"))
            elif not retry_failed and fails_again(entry, x):
                self.note(self.entry(x, "failed", entry.reason, entry.message))  # type: ignore[union-attr]
            else:
                todo.append(x)
        return todo

    def _changed(self, items: list[Item]) -> set[str]:
        """Uris of the items whose path, size and mtime do not match their catalog row."""
        known = self.collection.ids_for_paths([item.uri for item in items])
        records = self.collection.get_records(list(known.values())) if known else {}
        changed = set()
        for item in items:
            record = records.get(known.get(item.uri, -1))
            if record is None or record.size != item.size or record.mtime != item.mtime:
                changed.add(item.uri)
        return changed

    def entry(
        self, item: Item, status: str, reason: str | None = None, message: str | None = None
    ) -> LedgerEntry:
        return LedgerEntry(item.uri, status, reason, message, item.size, item.mtime)

    def note(self, entry: LedgerEntry, *, reused: bool = False) -> None:
        """Count one input and stage its ledger entry."""
        self._entries.append(replace(entry, run=self.run.id))
        self.counts[entry.status] += 1
        self.counts["seen"] += 1
        self.counts["reused"] += int(reused)

    def checkpoint(self, worked: bool) -> None:
        """Stage the chunk's entries; commit when it did decoding or model work (or many)."""
        with self.times.stage("write"):
            self._uncommitted += len(self._entries)
            self.collection.record(self._entries, self._row())
            self._entries = []
        if worked or self._uncommitted >= LEDGER_ONLY_COMMIT:
            self._commit()

    def finish(self, pruned: int) -> None:
        """Mark the run finished and commit (the prune, if any, commits with it)."""
        self.counts["pruned"] += pruned
        self.run = replace(self.run, finished=True, ended=now())
        self.collection.record(self._entries, self._row())
        self._entries = []
        self._commit()

    def _commit(self) -> None:
        with self.times.stage("commit"):
            self.collection.commit()
        self._uncommitted = 0

    def _row(self) -> RunRecord:
        stages = self.times.rounded() | {"wall": round(self._wall(), 3)}
        return replace(self.run, counts=dict(self.counts), stages=stages)

    def _wall(self) -> float:
        return self._earlier_wall + time.perf_counter() - self._started

    def report(self) -> IndexReport:
        failures = tuple(
            Failure(e.uri, e.reason or "error", e.message or "")
            for e in self.collection.ledger(status="failed", run=self.run.id)
        )
        skipped = Counter(
            e.reason or "unknown" for e in self.collection.ledger(status="skipped", run=self.run.id)
        )
        c = self.counts
        return IndexReport(
            seen=c["seen"],
            indexed=c["indexed"],
            unchanged=c["unchanged"],
            failed=c["failed"],
            skipped=c["skipped"],
            seconds=self._wall(),
            failures=failures,
            reused=c["reused"],
            pruned=c["pruned"],
            run=self.run.id,
            resumed=self.resumed,
            stages=self.times.rounded(),
            skipped_reasons=dict(skipped),
        )


def fails_again(entry: LedgerEntry | None, item: Item) -> bool:
    """A failure recorded for exactly these bytes (same size and mtime) that is no fluke."""
    return (
        entry is not None
        and entry.status == "failed"
        and entry.reason not in RETRY_ALWAYS
        and entry.size == item.size
        and entry.mtime == item.mtime
    )

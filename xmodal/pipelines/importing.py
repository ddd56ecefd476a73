"""Build or extend a collection from embeddings computed elsewhere: ``xmodal import``.

The parts of every folder named (``xmodal.pipelines.sources.embeddings``) are read in row
blocks; their rows are checked, L2-normalised and added with a catalog row each, and committed
every ``commit_every`` rows together with the ledger, exactly as ``index_paths`` commits its
chunks (``xmodal.pipelines.accounting.RunBook``). Policies:

- A part's ledger row (its uri is the vectors file's absolute path) ends as ``indexed``
  (imported), ``unchanged`` (imported before and its size and mtime are the same: passed over)
  or ``failed`` with a one-line reason (unreadable, row counts that differ). A failed part does
  not stop the others.
- Resume: ids advance only at commit, and each commit that ends inside a part also commits the
  part's ledger row as ``failed``/``interrupted`` with the row reached. A killed import re-run
  over the same parts passes over the finished ones and continues the interrupted part at that
  row with the run's own chunk size, so it ends with the ids, rows and ledger a clean run makes.
- Rows with NaN or infinite values, or all zeros, cannot be normalised: each is refused alone
  (ledger row ``PART#ROW``, status ``skipped``, reason ``not-finite`` or ``zero-norm``) and the
  part still imports; every other row is divided by its norm (those whose norm was not 1 within
  the storage type's rounding are counted as normalised).
- A row's catalog path is its ``image_path`` (``uri`` in ``xmodal embed`` output), else
  ``PART#ROW``; a path already catalogued is replaced, as ``xmodal index`` does. The catalog
  keeps path and caption only: a Record has no field for further metadata columns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from xmodal.errors import EncoderMismatchError, XmodalError
from xmodal.index import Collection, Record
from xmodal.index.checks import check_encoder
from xmodal.index.ledger import LedgerEntry
from xmodal.pipelines.accounting import Failure, RunBook
from xmodal.pipelines.features.output import UNIT_TOLERANCE
from xmodal.pipelines.progress import progress_bar
from xmodal.pipelines.sources.embeddings import Block, EmbeddingSet, Part, first_dim, read_blocks

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
_REACHED = re.compile(r"^imported rows 0-(\d+) of \d+;")
ROW_COUNTS = ("rows_added", "rows_normalised", "rows_refused")


@dataclass(frozen=True)
class ImportConfig:
    commit_every: int = 65536  # rows per committed chunk (a resumed run keeps its own)
    progress: bool | None = None  # None: a progress bar on terminals only


@dataclass(frozen=True)
class RefusedRow:
    part: str
    row: int
    reason: str  # not-finite | zero-norm


@dataclass(frozen=True)
class ImportReport:
    """Parts: seen = imported + already imported + failed; rows of every attempt of the run."""

    parts: int
    imported: int
    already_imported: int
    failed: int
    rows_added: int
    rows_normalised: int
    rows_refused: int
    seconds: float
    run: int = 0
    resumed: bool = False
    failures: tuple[Failure, ...] = field(default=(), repr=False)
    refused: tuple[RefusedRow, ...] = field(default=(), repr=False)

    def summary(self) -> str:
        return (
            f"parts {self.parts}: imported {self.imported}, already imported "
            f"{self.already_imported}, failed {self.failed}; rows added {self.rows_added}, "
            f"normalised {self.rows_normalised}, refused {self.rows_refused} "
            f"in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        data["refused"] = [asdict(r) for r in self.refused]
        return data


def check_fit(sets: Sequence[EmbeddingSet], spec: Mapping[str, Any]) -> None:
    """Refuse parts the ``spec`` encoder cannot query: another width, or (embed.json) model."""
    for embeddings in sets:
        if embeddings.model is not None:
            try:
                check_encoder(embeddings.source, embeddings.model, spec)  # type: ignore[arg-type]
            except EncoderMismatchError:
                raise XmodalError(
                    f"{embeddings.source} was embedded with model "
                    f"{embeddings.model.get('model_id')!r} (revision "
                    f"{embeddings.model.get('revision')}), but --model is {spec.get('model_id')!r} "
                    f"(revision {spec.get('revision')}); pass the model that computed them"
                ) from None
        for part in embeddings.parts:
            dim = first_dim(part)
            if dim is not None and dim != spec.get("dim"):
                raise XmodalError(
                    f"{part.uri} holds rows of dim {dim}, but model {spec.get('model_id')!r} "
                    f"makes dim {spec.get('dim')}; pass the model that computed these embeddings"
                )


@dataclass(frozen=True)
class CleanRows:
    """A block's rows ready to store: unit float32 ``vectors`` for the rows in ``kept``."""

    vectors: np.ndarray
    kept: np.ndarray  # indices into the block
    refused: dict[int, str]  # index into the block -> reason
    normalised: int


def clean_rows(vectors: np.ndarray) -> CleanRows:
    """Refuse rows that cannot be unit vectors; scale the others to norm 1.

    A row counts as normalised when its norm was off 1 by more than rounding a unit row to the
    stored type can explain (``UNIT_TOLERANCE``: fp16 drifts by ~5e-4).
    """
    rows = np.asarray(vectors, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(rows, axis=1)
    finite = np.isfinite(rows).all(axis=1) & np.isfinite(norms)
    refused = {int(i): "not-finite" for i in np.flatnonzero(~finite)}
    refused |= {int(i): "zero-norm" for i in np.flatnonzero(finite & (norms == 0))}
    kept = np.flatnonzero(finite & (norms > 0))
    tolerance = UNIT_TOLERANCE.get(np.dtype(vectors.dtype), 1e-4)
    normalised = int((np.abs(norms[kept] - 1.0) > tolerance).sum())
    unit = rows[kept] / norms[kept, None]
    return CleanRows(np.ascontiguousarray(unit, np.float32), kept, refused, normalised)


def import_embeddings(
    collection: Collection,
    spec: Mapping[str, Any],
    sets: Sequence[EmbeddingSet],
    config: ImportConfig = ImportConfig(),
) -> ImportReport:
    """Import every part of ``sets`` into ``collection`` (opened writable); see the module doc."""
    if config.commit_every < 1:
        raise XmodalError(f"--commit-every must be at least 1, got {config.commit_every}")
    collection.check_encoder(spec)
    check_fit(sets, spec)
    book = RunBook.start(collection, [s.source for s in sets], config.commit_every)
    for name in ROW_COUNTS:
        book.counts.setdefault(name, 0)
    # A folder named twice is imported once: the second pass would replace its own rows.
    parts = list({p.uri: p for embeddings in sets for p in embeddings.parts}.values())
    known = collection.ledger_for(part.uri for part in parts)
    bar = progress_bar(config.progress, sum(part.rows for part in parts))
    chunk = _Chunk(book)
    try:
        for part in parts:
            start = _start_row(book, part, known.get(part.uri))
            if start is not None:
                _import_part(chunk, part, start, bar)
            else:
                bar.update(part.rows)
        book.finish(pruned=0)
    finally:
        bar.close()
    return _report(book)


def _start_row(book: RunBook, part: Part, entry: LedgerEntry | None) -> int | None:
    """The row to import ``part`` from; None when it needs nothing (its ledger row is noted)."""
    same = entry is not None and entry.size == part.size and entry.mtime == part.mtime
    if entry is not None and entry.reason == INTERRUPTED:
        reached = _REACHED.match(entry.message or "")
        if same and reached:
            return int(reached.group(1))
    elif entry is not None and entry.run == book.run.id:
        return None  # handled by the attempt this run resumes, and counted there
    elif same and entry is not None and entry.status == "indexed":
        book.note(_entry(part, "unchanged"))
        return None
    if part.problem is not None:
        log.info("failed: %s", part.problem)
        book.note(_entry(part, "failed", "unreadable", part.problem))
        return None
    return 0


def _entry(
    part: Part, status: str, reason: str | None = None, message: str | None = None, run: int = 0
) -> LedgerEntry:
    return LedgerEntry(part.uri, status, reason, message, part.size, part.mtime, run)


def _import_part(chunk: _Chunk, part: Part, start: int, bar: Any) -> None:
    try:
        for block in read_blocks(part, start):
            while len(block):
                piece, block = block.split(chunk.room())
                chunk.add(part, piece)
                bar.update(len(piece))
    except XmodalError as exc:
        chunk.book.note(_entry(part, "failed", "unreadable", str(exc)))
        return
    chunk.book.note(_entry(part, "indexed"))


class _Chunk:
    """Rows staged since the last commit; commits every ``commit_every`` rows read."""

    def __init__(self, book: RunBook) -> None:
        self.book = book
        self.rows = 0

    def room(self) -> int:
        return self.book.commit_every - self.rows

    def add(self, part: Part, block: Block) -> None:
        clean = clean_rows(block.vectors)
        records = [_record(part, block, int(i)) for i in clean.kept]
        _add_unique(self.book.collection, clean.vectors, records)
        refused = [
            LedgerEntry(
                f"{part.uri}#{block.start + i}",
                "skipped",
                reason,
                _why(reason),
                run=self.book.run.id,
            )
            for i, reason in sorted(clean.refused.items())
        ]
        self.book.collection.record(refused)
        counts = self.book.counts
        counts["rows_added"] += len(records)
        counts["rows_normalised"] += clean.normalised
        counts["rows_refused"] += len(refused)
        self.rows += len(block)
        if self.rows >= self.book.commit_every:
            reached = block.start + len(block)
            message = (
                f"imported rows 0-{reached} of {part.rows}; the next import of these parts "
                "continues from there"
            )
            entry = _entry(part, "failed", INTERRUPTED, message, run=self.book.run.id)
            self.book.collection.record([entry])
            self.book.checkpoint(True)
            self.rows = 0


def _why(reason: str) -> str:
    if reason == "zero-norm":
        return "the row is all zeros and has no direction"
    return "the row has NaN or infinite values"


def _record(part: Part, block: Block, i: int) -> Record:
    return Record(block.paths[i] or f"{part.uri}#{block.start + i}", caption=block.captions[i])


def _add_unique(collection: Collection, vectors: np.ndarray, records: list[Record]) -> None:
    """Add in runs without a repeated path (one add() refuses those): the later row replaces."""
    begin, seen = 0, set()
    for i, record in enumerate(records):
        if record.path in seen:
            collection.add(vectors[begin:i], records[begin:i])
            begin, seen = i, set()
        seen.add(record.path)
    if begin < len(records):
        collection.add(vectors[begin:], records[begin:])


def _report(book: RunBook) -> ImportReport:
    collection, run = book.collection, book.run.id
    failures, refused = [], []
    for entry in collection.ledger(run=run):
        if entry.status == "failed":
            failures.append(Failure(entry.uri, entry.reason or "error", entry.message or ""))
        elif entry.status == "skipped" and "#" in entry.uri:
            part, _, row = entry.uri.rpartition("#")
            refused.append(RefusedRow(part, int(row), entry.reason or ""))
    c = book.counts
    return ImportReport(
        parts=c["seen"],
        imported=c["indexed"],
        already_imported=c["unchanged"],
        failed=c["failed"],
        rows_added=c["rows_added"],
        rows_normalised=c["rows_normalised"],
        rows_refused=c["rows_refused"],
        seconds=book.report().seconds,
        run=run,
        resumed=book.resumed,
        failures=tuple(failures),
        refused=tuple(sorted(refused, key=lambda r: (r.part, r.row))),
    )

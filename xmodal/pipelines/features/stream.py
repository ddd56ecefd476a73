"""Streams of features: images decoded in worker processes and encoded in batches; texts.

Shared by ``xmodal embed`` (which writes the rows) and ``xmodal probe`` (which keeps them).
Every image input comes back either in an :class:`Embedded` batch or as a :class:`Dropped`
(failed to decode, or skipped by the source's policy), so callers can account for all of them.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.encoders import Encoder
from xmodal.encoders.representation import Representation
from xmodal.errors import XmodalError
from xmodal.pipelines.sources import Item, Skipped
from xmodal.pipelines.workers import (
    DECODE_TIMEOUT,
    Prepared,
    default_workers,
    make_pool,
    prepare_stream,
)

TEXT_COLUMNS = ("text", "caption", "sentence", "title")


@dataclass(frozen=True)
class Embedded:
    """A batch of decoded images and their feature rows, in input order."""

    items: tuple[Item, ...]
    sizes: tuple[tuple[int | None, int | None], ...]
    vectors: np.ndarray


@dataclass(frozen=True)
class Dropped:
    """An input that produced no row: ``status`` is "failed" (with a reason) or "skipped"."""

    uri: str
    status: str
    reason: str
    message: str = ""


def image_features(
    encoder: Encoder,
    inputs: Iterable[Item | Skipped],
    representation: Representation,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    timeout: float = DECODE_TIMEOUT,
) -> Iterator[Embedded | Dropped]:
    """Decode ``inputs`` (worker processes, a bounded window ahead); encode them in batches.

    An input not read and decoded within ``timeout`` seconds is dropped with reason ``timeout``.
    """
    workers = default_workers(encoder.spec.device) if workers is None else workers
    pool = make_pool(encoder.preparer, workers)
    items: deque[Item] = deque()
    skipped: list[Skipped] = []

    def sources() -> Iterator[object]:
        for entry in inputs:
            if isinstance(entry, Skipped):
                skipped.append(entry)
            else:
                items.append(entry)
                yield entry.source

    batch: list[tuple[Item, Prepared]] = []
    try:
        for prepared in prepare_stream(
            sources(), encoder.preparer, pool, 4 * batch_size, timeout=timeout
        ):
            item = items.popleft()
            yield from (Dropped(s.uri, "skipped", s.reason) for s in skipped)
            skipped.clear()
            if prepared.pixels is None:
                message = prepared.message or ""
                yield Dropped(item.uri, "failed", prepared.reason or "error", message)
                continue
            batch.append((item, prepared))
            if len(batch) == batch_size:
                yield _encode(encoder, batch, representation)
                batch = []
        if batch:
            yield _encode(encoder, batch, representation)
        yield from (Dropped(s.uri, "skipped", s.reason) for s in skipped)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _encode(
    encoder: Encoder, batch: list[tuple[Item, Prepared]], representation: Representation
) -> Embedded:
    pixels = np.stack([p.pixels for _, p in batch])
    vectors = encoder.encode_pixels(pixels, representation=representation)
    sizes = tuple((p.width, p.height) for _, p in batch)
    return Embedded(tuple(i for i, _ in batch), sizes, vectors)


def tap_captions(
    inputs: Iterable[Item | Skipped], on_caption: Callable[[str, str], None]
) -> Iterator[Item | Skipped]:
    """Pass ``inputs`` through, calling ``on_caption(text, uri)`` for every captioned item."""
    for entry in inputs:
        if isinstance(entry, Item) and entry.caption:
            on_caption(entry.caption, entry.uri)
        yield entry


def read_texts(path: str | Path, column: str | None = None) -> Iterator[tuple[str, str]]:
    """(text, uri) pairs from a text file (one per line) or a table column (csv/jsonl/parquet).

    A row's uri is ``/abs/file#N`` with N counted from 1; empty lines and cells are left out.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise XmodalError(f"no such texts file: {path}; pass a .txt file or a csv/jsonl/parquet")
    suffix, where = path.suffix.lower(), str(path.resolve())
    if suffix in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):
        rows: Iterable[object] = _table_column(path, suffix, column)
    else:
        rows = _lines(path)
    for number, text in enumerate(rows, start=1):
        if text is not None and str(text).strip():
            yield str(text).strip(), f"{where}#{number}"


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def _table_column(path: Path, suffix: str, column: str | None) -> list[object]:
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        name = _pick_column(path, names, column)
        return pq.read_table(path, columns=[name]).column(name).to_pylist()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        names = sorted({key for record in records for key in record})
        name = _pick_column(path, names, column)
        return [record.get(name) for record in records]
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
        name = _pick_column(path, reader.fieldnames or [], column)
        return [row.get(name) for row in reader]


def _pick_column(path: Path, names: list[str], column: str | None) -> str:
    if column is not None and column in names:
        return column
    if column is None:
        for name in TEXT_COLUMNS:
            if name in names:
                return name
    wanted = f"column {column!r}" if column else f"a column named one of {', '.join(TEXT_COLUMNS)}"
    raise XmodalError(
        f"{path} has no {wanted} (columns: {', '.join(names) or 'none'}); name the text column "
        "with --text-column"
    )

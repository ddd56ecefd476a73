"""Tables of paths: Parquet, CSV and JSON Lines, read in batches.

A path column names the image files (relative paths are relative to the table's folder; a
binary Parquet column holds raw file-name bytes); an optional caption column gives captions.
Unless the policy names them, the path column is the first of ``path``, ``file``, ``filepath``,
``image``, ``image_path``, ``filename`` and the caption column the first of ``caption``, ``text``,
``title`` (case-insensitive). Rows stream in batches of a few thousand, so a table of millions of
rows keeps memory flat. Each row is an input (``table#N`` names row N, from 1): a row without a
path is ``no-path``, a URL is ``not-local`` (sources read local files only), a JSON line that is
not an object is ``bad-row``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from xmodal.errors import XmodalError
from xmodal.pipelines.sources.items import (
    Item,
    Skipped,
    SourcePolicy,
    clean_caption,
    file_item,
    is_remote,
)

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")
PATH_COLUMNS = ("path", "file", "filepath", "image", "image_path", "filename")
CAPTION_COLUMNS = ("caption", "text", "title")
_BATCH_ROWS = 4096
_CSV_BLOCK = 256 << 10  # a few thousand rows a batch; one row must fit in a block

_BAD_ROW = object()  # a JSON line that is not an object
Rows = Iterator[tuple[object, object]]


def is_table_name(path: str) -> bool:
    return path.lower().endswith(TABLE_SUFFIXES)


def read_table(path: str, policy: SourcePolicy) -> Iterator[Item | Skipped]:
    """Every row of the table ``path`` (absolute) as an Item or a Skipped, in row order."""
    base = os.path.dirname(path)
    for number, (raw_path, raw_caption) in enumerate(_rows(path, policy), start=1):
        if raw_path is _BAD_ROW:
            yield Skipped(f"{path}#{number}", "bad-row")
            continue
        name = os.fsdecode(raw_path) if isinstance(raw_path, bytes) else raw_path
        if not isinstance(name, str) or not name.strip():
            yield Skipped(f"{path}#{number}", "no-path")
        elif is_remote(name):
            yield Skipped(name, "not-local")
        else:
            full = os.path.abspath(os.path.join(base, os.path.expanduser(name)))
            yield file_item(full, clean_caption(raw_caption), sidecar=False)


def _rows(path: str, policy: SourcePolicy) -> Rows:
    suffix = path.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "parquet":
            yield from _parquet_rows(path, policy)
        elif suffix == "csv":
            yield from _csv_rows(path, policy)
        else:
            yield from _jsonl_rows(path, policy)
    except OSError as exc:
        raise XmodalError(f"cannot read table {path}: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("pyarrow"):  # ArrowInvalid & co: a malformed table
            raise XmodalError(f"cannot read table {path}: {exc}") from None
        raise


def pick_columns(path: str, names: Sequence[str], policy: SourcePolicy) -> tuple[str, str | None]:
    """The path column and the caption column (or None) of a table with columns ``names``."""
    path_column = _pick(names, policy.path_column, PATH_COLUMNS)
    if path_column is None:
        raise XmodalError(
            f"table {path} has no path column (looked for {', '.join(PATH_COLUMNS)}; "
            f"it has {', '.join(names) or 'none'}); name it with --path-column"
        )
    caption_column = _pick(names, policy.caption_column, CAPTION_COLUMNS)
    return path_column, caption_column


def _pick(names: Sequence[str], wanted: str | None, defaults: Sequence[str]) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise XmodalError(f"no column {wanted!r} in the table; it has {', '.join(names)}")
        return wanted
    lowered = {name.lower(): name for name in reversed(names)}
    return next((lowered[n] for n in defaults if n in lowered), None)


def _parquet_rows(path: str, policy: SourcePolicy) -> Rows:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as table:
        columns = pick_columns(path, table.schema_arrow.names, policy)
        wanted = [c for c in columns if c is not None]
        for batch in table.iter_batches(batch_size=_BATCH_ROWS, columns=wanted):
            yield from _batch_rows(batch, columns)


def _csv_rows(path: str, policy: SourcePolicy) -> Rows:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    read = pcsv.ReadOptions(block_size=_CSV_BLOCK)
    with pcsv.open_csv(path, read_options=read) as probe:
        columns = pick_columns(path, probe.schema.names, policy)
    wanted = [c for c in columns if c is not None]
    convert = pcsv.ConvertOptions(
        include_columns=wanted, column_types={c: pa.string() for c in wanted}
    )
    with pcsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for batch in reader:
            yield from _batch_rows(batch, columns)


def _batch_rows(batch, columns: tuple[str, str | None]) -> Rows:
    path_column, caption_column = columns
    paths = batch.column(path_column).to_pylist()
    captions = batch.column(caption_column).to_pylist() if caption_column else [None] * len(paths)
    yield from zip(paths, captions, strict=True)


def _jsonl_rows(path: str, policy: SourcePolicy) -> Rows:
    columns: tuple[str, str | None] | None = None
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                yield _BAD_ROW, None
                continue
            if columns is None:
                columns = pick_columns(path, list(row), policy)
            caption = row.get(columns[1]) if columns[1] else None
            yield row.get(columns[0]), caption


def check_table(path: str, policy: SourcePolicy) -> None:
    """Fail now, not mid-run, when the table cannot be read or lacks the columns."""
    rows = _rows(path, policy)
    try:
        next(rows, None)
    finally:
        rows.close()

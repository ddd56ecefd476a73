"""Streaming, crash-safe writers for ``xmodal embed`` outputs.

Rows are appended as they are produced, so memory stays flat however many inputs stream
through: vectors go to a temp ``.npy`` whose fixed-size header is rewritten with the final row
count at the end; metadata goes to a temp parquet file one row group at a time. Every output is
written under a temp name (``.name.tmp``) in the output folder and renamed into place only when
whole, so a crash leaves temp files, never a half file under a final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xmodal.errors import XmodalError
from xmodal.index.durable import publish

NPY_HEADER_BYTES = 128  # fixed, so the final row count can be written over the placeholder
_MAGIC = b"\x93NUMPY\x01\x00"
READ_ROWS = 65536


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _npy_header(dtype: np.dtype, rows: int, dim: int) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (rows, dim)})  # fmt: skip
    room = NPY_HEADER_BYTES - len(_MAGIC) - 2
    body = text.encode("latin1").ljust(room - 1) + b"\n"
    if len(body) > room:
        raise XmodalError(f"{rows} x {dim} rows do not fit the npy header; split the sources")
    return _MAGIC + len(body).to_bytes(2, "little") + body


class NpyRowWriter:
    """Append (n, dim) rows to a temp ``.npy``; ``close`` writes the row count into its header."""

    def __init__(self, path: Path, dim: int, dtype: str | np.dtype = np.float32) -> None:
        self.path, self.dim, self.dtype, self.rows = path, dim, np.dtype(dtype), 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._handle.write(_npy_header(self.dtype, 0, dim))

    def append(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got {rows.shape}")
        self._handle.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.rows += len(rows)

    def close(self) -> Path:
        self._handle.seek(0)
        self._handle.write(_npy_header(self.dtype, self.rows, self.dim))
        self._handle.close()
        return self.path


class ParquetRowWriter:
    """Append row groups (dicts of columns) to a parquet file with a fixed schema."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema, self.rows = path, schema, 0
        self._writer = pq.ParquetWriter(path, schema)

    def append(self, columns: dict[str, Any]) -> None:
        table = pa.Table.from_pydict(columns, schema=self.schema)
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> Path:
        self._writer.close()
        return self.path


def read_npy_rows(path: Path) -> np.ndarray:
    """Memory-map a finished ``.npy`` (header rewritten) for chunked reading."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def embedding_type(dtype: np.dtype, dim: int) -> pa.DataType:
    value = pa.float16() if dtype == np.float16 else pa.float32()
    return pa.list_(value, dim) if dim else pa.list_(value)


def write_npy(vectors: np.ndarray, final: Path, dtype: np.dtype, transform: Any = None) -> int:
    """Copy ``vectors`` (memmap) to ``final`` in chunks, through ``transform``, as ``dtype``."""
    dim = transform.out_dim if transform is not None else vectors.shape[1]
    writer = NpyRowWriter(temp_name(final), dim, dtype)
    for block in iter_blocks(vectors, transform):
        writer.append(block)
    publish(writer.close(), final)
    return dim


def write_parquet(
    vectors: np.ndarray, metadata: Path, final: Path, dtype: np.dtype, transform: Any = None
) -> int:
    """One parquet: the metadata columns plus an ``embedding`` fixed-size list column."""
    dim = transform.out_dim if transform is not None else vectors.shape[1]
    source = pq.ParquetFile(metadata)
    schema = source.schema_arrow.append(pa.field("embedding", embedding_type(dtype, dim)))
    writer = ParquetRowWriter(temp_name(final), schema)
    start = 0
    for batch in source.iter_batches(batch_size=READ_ROWS):
        block = _transformed(vectors[start : start + batch.num_rows], transform)
        flat = pa.array(np.ascontiguousarray(block, dtype).reshape(-1))
        columns = {name: batch.column(name) for name in batch.schema.names}
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        writer.append(columns)
        start += batch.num_rows
    publish(writer.close(), final)
    return dim


def iter_blocks(vectors: np.ndarray, transform: Any = None) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), READ_ROWS):
        yield _transformed(vectors[start : start + READ_ROWS], transform)


def _transformed(block: np.ndarray, transform: Any) -> np.ndarray:
    block = np.asarray(block, np.float32)
    return transform.transform(block) if transform is not None else block


def write_json(data: dict[str, Any], final: Path) -> None:
    temp = temp_name(final)
    temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    publish(temp, final)

"""Embeddings computed elsewhere, read part by part in row blocks (``xmodal import``).

Two layouts are recognised in each folder named:

- clip-retrieval's inference output: ``img_emb/img_emb_N.npy`` (float16 or float32, (n, d)) with
  ``metadata/metadata_N.parquet`` (``image_path``, ``caption``, more columns); a ``text_emb/``
  folder beside them is ignored (only image embeddings are imported);
- ``xmodal embed`` output: ``embed.json`` plus ``image_embeddings.npy`` and
  ``image_metadata.parquet`` (``uri``, ``caption``), or one ``image_embeddings.parquet`` with an
  ``embedding`` list column. ``embed.json`` names the model, which the importer checks.

Memory stays bounded whatever the size: ``.npy`` files are memory-mapped and parquet files read
in row batches of the needed columns only. A part that cannot be read as a whole (missing
metadata, row counts that differ, not a 2-D float array) carries a one-line ``problem`` and is
recorded failed by the importer; the other parts still import.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xmodal.errors import XmodalError
from xmodal.index.rowset import read_rows

CLIP_RETRIEVAL = "clip-retrieval"
XMODAL_EMBED = "xmodal-embed"
EMBED_MANIFEST = "embed.json"
READ_ROWS = 8192  # rows per block: 16 MiB of float32 at d=512
PATH_COLUMNS = ("image_path", "uri")  # clip-retrieval, xmodal embed
_PART_NUMBER = re.compile(r"^img_emb_(\d+)\.npy$")
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Part:
    """One file of embeddings: its ledger identity (``uri``, ``size``, ``mtime``) and shape.

    ``size`` and ``mtime`` cover the vectors and the metadata file together, so a part whose
    metadata was rewritten is imported again. ``problem`` says why it cannot be read, if so.
    """

    uri: str
    metadata: str | None
    size: int
    mtime: float
    rows: int
    dim: int | None
    dtype: str
    problem: str | None = None


@dataclass(frozen=True)
class EmbeddingSet:
    """One folder named on the command line: its layout, parts and (embed.json) model."""

    source: str
    layout: str
    parts: tuple[Part, ...]
    model: dict[str, Any] | None = None


@dataclass(frozen=True)
class Block:
    """Consecutive rows of a part from row ``start``: vectors as stored, paths and captions."""

    start: int
    vectors: np.ndarray
    paths: list[str | None]
    captions: list[str | None]

    def __len__(self) -> int:
        return len(self.vectors)

    def split(self, n: int) -> tuple[Block, Block]:
        head = Block(self.start, self.vectors[:n], self.paths[:n], self.captions[:n])
        tail = Block(self.start + n, self.vectors[n:], self.paths[n:], self.captions[n:])
        return head, tail


def open_embeddings(source: str | os.PathLike[str]) -> EmbeddingSet:
    """Recognise the layout of the folder ``source`` and describe its parts (headers only)."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise XmodalError(f"{source}: no such folder; name clip-retrieval or `xmodal embed` output")
    folder = folder.resolve()
    if (folder / EMBED_MANIFEST).is_file():
        return _embed_output(folder)
    if (folder / "img_emb").is_dir():
        return _clip_retrieval(folder)
    raise XmodalError(
        f"{folder} holds neither img_emb/ (clip-retrieval inference output) nor {EMBED_MANIFEST} "
        "(`xmodal embed` output); name one of those folders"
    )


def _clip_retrieval(folder: Path) -> EmbeddingSet:
    numbered = []
    for path in (folder / "img_emb").iterdir():
        if match := _PART_NUMBER.match(path.name):
            numbered.append((int(match.group(1)), path))
    if not numbered:
        raise XmodalError(f"{folder / 'img_emb'} holds no img_emb_N.npy files")
    parts = tuple(
        _npy_part(path, folder / "metadata" / f"metadata_{n}.parquet")
        for n, path in sorted(numbered)
    )
    return EmbeddingSet(str(folder), CLIP_RETRIEVAL, parts)


def _embed_output(folder: Path) -> EmbeddingSet:
    try:
        manifest = json.loads((folder / EMBED_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise XmodalError(f"{folder / EMBED_MANIFEST} cannot be read: {exc}") from exc
    image = (manifest.get("outputs") or {}).get("image")
    if not image:
        raise XmodalError(f"{folder} holds no image embeddings (embedded with --modality text)")
    if manifest.get("representation", "embedding") != "embedding" or manifest.get("pca"):
        raise XmodalError(
            f"{folder} holds {manifest.get('representation')} features"
            f"{' reduced by PCA' if manifest.get('pca') else ''}, not the shared embedding space; "
            "import output of `xmodal embed` with the default --representation and no --pca"
        )
    files = [folder / name for name in image.get("files", ())]
    if not files:
        raise XmodalError(f"{folder / EMBED_MANIFEST} lists no image embedding files")
    part = _parquet_part(files[0]) if len(files) == 1 else _npy_part(files[0], files[1])
    return EmbeddingSet(str(folder), XMODAL_EMBED, (part,), manifest.get("model"))


def _npy_part(vectors: Path, metadata: Path) -> Part:
    size, mtime = _stat(vectors, metadata)
    rows, dim, dtype, problem = 0, None, "", None
    try:
        array = np.load(vectors, mmap_mode="r", allow_pickle=False)
        rows, dtype = len(array), str(array.dtype)
        dim = array.shape[1] if array.ndim == 2 else None
        if array.ndim != 2 or array.dtype not in _FLOATS:
            problem = (
                f"{vectors} holds {array.dtype} of shape {array.shape}, not (rows, dim) floats"
            )
        elif not metadata.is_file():
            problem = f"{vectors} has no metadata file {metadata}"
        elif (meta_rows := pq.ParquetFile(metadata).metadata.num_rows) != rows:
            problem = f"{vectors} has {rows} rows but {metadata} has {meta_rows}"
    except (OSError, ValueError, pa.ArrowException) as exc:
        problem = f"{vectors} cannot be read: {exc}"
    return Part(str(vectors), str(metadata), size, mtime, rows, dim, dtype, problem)


def _parquet_part(path: Path) -> Part:
    size, mtime = _stat(path)
    rows, dim, dtype, problem = 0, None, "", None
    try:
        table = pq.ParquetFile(path)
        rows = table.metadata.num_rows
        field = table.schema_arrow.field("embedding")
        if isinstance(field.type, pa.FixedSizeListType):
            dim = field.type.list_size
        dtype = str(field.type.value_type.to_pandas_dtype().__name__)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        problem = f"{path} cannot be read as embeddings: {exc}"
    return Part(str(path), None, size, mtime, rows, dim, dtype, problem)


def _stat(*paths: Path) -> tuple[int, float]:
    size, mtime = 0, 0.0
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            continue
        size, mtime = size + status.st_size, max(mtime, status.st_mtime)
    return size, mtime


def read_blocks(part: Part, start: int = 0, rows: int = READ_ROWS) -> Iterator[Block]:
    """The part's rows from ``start`` on, in blocks of at most ``rows``."""
    if part.metadata is None:
        yield from _parquet_blocks(part, start, rows)
        return
    vectors = np.load(part.uri, mmap_mode="r", allow_pickle=False)
    table = pq.ParquetFile(part.metadata)
    at = 0
    for batch in table.iter_batches(batch_size=rows, columns=_columns(table.schema_arrow)):
        end = at + batch.num_rows
        if end > start:
            skip = max(start - at, 0)
            paths, captions = _metadata(batch.slice(skip))
            yield Block(at + skip, read_rows(vectors, at + skip, end), paths, captions)
        at = end


def _parquet_blocks(part: Part, start: int, rows: int) -> Iterator[Block]:
    table = pq.ParquetFile(part.uri)
    columns = [*_columns(table.schema_arrow), "embedding"]
    at = 0
    for batch in table.iter_batches(batch_size=rows, columns=columns):
        end = at + batch.num_rows
        if end > start:
            batch = batch.slice(max(start - at, 0))
            paths, captions = _metadata(batch)
            vectors = _list_rows(batch.column("embedding"), part)
            yield Block(end - batch.num_rows, vectors, paths, captions)
        at = end


def _columns(schema: pa.Schema) -> list[str]:
    path = next((name for name in PATH_COLUMNS if name in schema.names), None)
    return [name for name in (path, "caption") if name is not None and name in schema.names]


def _metadata(batch: pa.RecordBatch) -> tuple[list[str | None], list[str | None]]:
    names = batch.schema.names
    path = next((name for name in PATH_COLUMNS if name in names), None)
    none = [None] * batch.num_rows
    paths = batch.column(path).to_pylist() if path else none
    captions = batch.column("caption").to_pylist() if "caption" in names else none
    return [_text(p) for p in paths], [_text(c) for c in captions]


def _text(value: Any) -> str | None:
    return str(value) if value is not None and str(value) != "" else None


def _list_rows(column: pa.Array, part: Part) -> np.ndarray:
    """An ``embedding`` list column as (n, dim) floats; rows of other lengths end the part."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dim = part.dim or (int(lengths[0]) if len(lengths) else 0)
    if column.null_count or (len(lengths) and (lengths != dim).any()):
        raise XmodalError(
            f"{part.uri}: the embedding column has empty rows or rows not of dim {dim}"
        )
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), dim)


def first_dim(part: Part) -> int | None:
    """The part's width: from its header, else (a plain list column) from its first row."""
    if part.dim is not None or part.problem is not None or not part.rows:
        return part.dim
    block = next(read_blocks(part, 0, 1), None)
    return block.vectors.shape[1] if block is not None else None

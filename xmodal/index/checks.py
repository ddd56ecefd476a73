"""Validation of what callers hand to a collection, with messages that say what to do.

User input is checked here with real exceptions (never ``assert``), so that a wrong array shape
or a different encoder is refused before anything is staged or written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import CollectionError, EncoderMismatchError
from xmodal.index.records import Record

# Fields that identify an encoder's embedding space: its content (revision: a commit id or a hash
# of the weights) and dim, never a name; a folder's name says nothing about what is inside it.
# Device, precision etc. do not change the space either.
IDENTITY_FIELDS = ("revision", "dim")
# Specs recorded without a revision can only be told apart by name.
_FALLBACK_FIELDS = ("model_id", "dim")
# Encoders emit float32 rows normalised to 1; fp16 towers drift by ~1e-3, so allow some slack.
_NORM_TOLERANCE = 1e-2


def clean_spec(encoder_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of the encoder spec; ``dim``, when given, must be a positive int."""
    if not isinstance(encoder_spec, Mapping):
        raise CollectionError(
            f"encoder_spec must be a dict (for example encoder.spec as a dict), got "
            f"{type(encoder_spec).__name__}"
        )
    try:
        spec = json.loads(json.dumps(dict(encoder_spec)))
    except (TypeError, ValueError) as exc:
        raise CollectionError(f"encoder_spec must be JSON-serialisable: {exc}") from exc
    dim = spec.get("dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
        raise CollectionError(f"encoder_spec['dim'] must be a positive integer, got {dim!r}")
    return spec


def check_vectors(
    vectors: Any, dim: int | None, *, what: str, allow_1d: bool = False
) -> np.ndarray:
    """Return ``vectors`` as C-contiguous float32 (n, dim) after checking shape and values."""
    array = np.asarray(vectors)
    if allow_1d and array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise CollectionError(f"{what} must be a 2-D array (rows, dim), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise CollectionError(f"{what} must be real numbers, got dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise CollectionError(
            f"{what} have dim {array.shape[1]}, but the collection holds dim {dim}; use the "
            "encoder the collection was built with"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise CollectionError(f"{what} contain NaN or infinite values; check the encoder output")
    return array


def check_normalised(vectors: np.ndarray) -> None:
    """Scores are inner products, which are cosines only for unit rows: refuse anything else."""
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > _NORM_TOLERANCE)
    if len(bad):
        raise CollectionError(
            f"vectors must be L2-normalised rows; row {bad[0]} has norm {norms[bad[0]]:.4f} "
            f"({len(bad)} rows off); divide by np.linalg.norm(v, axis=1, keepdims=True)"
        )


def check_records(records: Sequence[Record], rows: int) -> list[Record]:
    """One Record per vector row, each with a path, no path twice in one batch."""
    records = list(records)
    if len(records) != rows:
        raise CollectionError(f"got {rows} vectors but {len(records)} records; pass one per row")
    seen: set[str] = set()
    for record in records:
        if not isinstance(record, Record):
            raise CollectionError(f"records must be xmodal Record objects, got {type(record)}")
        if not isinstance(record.path, str) or not record.path:
            raise CollectionError(f"every record needs a non-empty str path, got {record.path!r}")
        if record.path in seen:
            raise CollectionError(
                f"path {record.path!r} appears twice in one add(); pass each path once"
            )
        seen.add(record.path)
    return records


def check_ids(ids: Any) -> np.ndarray:
    """Ids as a 1-D int64 array; a single int is accepted."""
    array = np.atleast_1d(np.asarray(ids))
    if array.size == 0:
        return np.zeros(0, np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise CollectionError(f"ids must be integers, got {array.dtype} with shape {array.shape}")
    return array.astype(np.int64, copy=False)


def check_k(k: Any) -> int:
    """``k`` must be a positive int (a bool is not)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise CollectionError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_encoder(directory: Path, built_with: dict[str, Any], query: Mapping[str, Any]) -> None:
    """Refuse a query encoder whose identity fields differ; unknown (None) values are not judged.

    Identity is revision + dim: a byte-identical copy of a model directory under another name,
    or the same directory moved, is the same model. Only where either side has no revision is
    the model_id compared instead.
    """
    query = dict(query)
    known = built_with.get("revision") is not None and query.get("revision") is not None
    differs = [
        field
        for field in (IDENTITY_FIELDS if known else _FALLBACK_FIELDS)
        if built_with.get(field) is not None
        and query.get(field) is not None
        and built_with.get(field) != query.get(field)
    ]
    if differs:
        raise EncoderMismatchError(
            f"collection {directory} was built with {_describe(built_with)}, but the query "
            f"encoder is {_describe(query)} (different {', '.join(differs)}); load "
            f"{built_with.get('model_id')!r} to search it, or build a new collection with "
            f"{query.get('model_id')!r}"
        )


def _describe(spec: Mapping[str, Any]) -> str:
    return (
        f"model {spec.get('model_id')!r} (revision {spec.get('revision')}, dim {spec.get('dim')})"
    )

"""The output folder of ``xmodal embed``: per-modality row sinks, PCA, and final files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from xmodal.errors import XmodalError
from xmodal.index.projection import Projection, fit_pca, parse_projection
from xmodal.pipelines.features.writers import (
    NpyRowWriter,
    ParquetRowWriter,
    iter_blocks,
    publish,
    read_npy_rows,
    temp_name,
    write_npy,
    write_parquet,
)

log = logging.getLogger(__name__)

_OUTPUT_SUFFIXES = ("embeddings.npy", "embeddings.parquet", "metadata.parquet", "pca.npz")


@dataclass(frozen=True)
class ModalityOutput:
    """The files written for one modality; ``dim`` is the width of the stored rows."""

    modality: str
    rows: int
    dim: int
    files: tuple[str, ...]
    pca_file: str | None = None
    pca_variance_kept: float | None = None
    normalized: bool | None = None  # every stored row has L2 norm 1; None: no rows


# Unit rows stored as float16 round each component to 11 bits: their norms move by < 5e-4.
UNIT_TOLERANCE = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 1e-4}


def unit_rows(vectors: np.ndarray, dtype: np.dtype, transform: object = None) -> bool | None:
    """Whether every row, as stored (through ``transform``, in ``dtype``), has L2 norm 1.

    Measured, not inferred from the representation: a PCA or an inner feature that happens to
    be normalised is reported as it is. None for no rows.
    """
    if not len(vectors):
        return None
    tolerance = UNIT_TOLERANCE.get(np.dtype(dtype), 1e-4)
    for block in iter_blocks(vectors, transform):
        stored = np.asarray(block, dtype).astype(np.float32)
        if not np.allclose(np.linalg.norm(stored, axis=1), 1.0, rtol=0.0, atol=tolerance):
            return False
    return True


def output_names() -> list[str]:
    return [f"{m}_{s}" for m in ("image", "text") for s in _OUTPUT_SUFFIXES]


def prepare_out_dir(out: Path, manifest: str) -> Path:
    """Create ``out``, or clear a previous (finished or interrupted) embed output there.

    A folder holding any file that ``embed`` does not write is refused, so user files are never
    deleted.
    """
    if out.exists() and not out.is_dir():
        raise XmodalError(f"{out} is a file; pass a folder for the outputs (-o DIR)")
    out.mkdir(parents=True, exist_ok=True)
    ours = set(output_names()) | {manifest, "failures.jsonl"}
    others = sorted(
        p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in ours
    )
    if others:
        raise XmodalError(
            f"{out} holds files that are not `xmodal embed` outputs ({', '.join(others[:3])}); "
            "choose a new or empty folder, or a previous embed output folder to replace"
        )
    (out / manifest).unlink(missing_ok=True)  # first: a folder without it reads as unfinished
    for name in ours:
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink()
    return out.resolve()


class RowSink:
    """Raw float32 rows and metadata of one modality, streamed to temp files."""

    def __init__(self, out: Path, modality: str, dim: int, schema: pa.Schema) -> None:
        self.out, self.modality, self.dim = out, modality, dim
        self.raw = NpyRowWriter(out / f".{modality}_raw.npy.tmp", dim, np.float32)
        self.meta = ParquetRowWriter(temp_name(out / f"{modality}_metadata.parquet"), schema)

    @property
    def rows(self) -> int:
        return self.raw.rows

    def add(self, vectors: np.ndarray, columns: dict[str, list]) -> None:
        ids = list(range(self.rows, self.rows + len(vectors)))
        self.raw.append(vectors)
        self.meta.append({"id": ids, **columns})

    def finish(self, fmt: str, dtype: np.dtype, pca: str | None) -> ModalityOutput:
        """Fit PCA if asked, write the final files, remove the temps."""
        raw, meta = self.raw.close(), self.meta.close()
        vectors = read_npy_rows(raw)
        projection = self._fit(vectors, pca) if pca else None
        name = f"{self.modality}_embeddings.{fmt}"
        if fmt == "parquet":
            dim = write_parquet(vectors, meta, self.out / name, dtype, projection)
            files = (name,)
        else:
            if projection is None and dtype == np.float32:
                publish(raw, self.out / name)  # already the final bytes: no second copy
                dim = self.dim
            else:
                dim = write_npy(vectors, self.out / name, dtype, projection)
            publish(meta, self.out / f"{self.modality}_metadata.parquet")
            files = (name, f"{self.modality}_metadata.parquet")
        normalized = unit_rows(vectors, dtype, projection)
        del vectors
        for temp in (raw, meta):
            temp.unlink(missing_ok=True)
        return ModalityOutput(
            self.modality,
            self.rows,
            dim,
            files,
            pca_file=self._save(projection),
            pca_variance_kept=projection.explained_variance_ratio if projection else None,
            normalized=normalized,
        )

    def _fit(self, vectors: np.ndarray, pca: str) -> Projection:
        spec = parse_projection(pca if pca.startswith("pca:") else f"pca:{pca}")
        limit = min(self.dim - 1, len(vectors) - 1)
        if len(vectors) < 2 or (spec.n_components or 0) > limit:
            raise XmodalError(
                f"--pca {pca}: {len(vectors)} {self.modality} rows of dim {self.dim} allow at most "
                f"{max(limit, 0)} axes; embed more inputs or ask for fewer axes"
            )
        return fit_pca(vectors, spec)

    def _save(self, projection: Projection | None) -> str | None:
        if projection is None:
            return None
        name = f"{self.modality}_pca.npz"
        temp = temp_name(self.out / name)
        projection.save(temp)
        publish(temp, self.out / name)
        return name

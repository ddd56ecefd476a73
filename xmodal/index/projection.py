"""The optional low-rank projection: PCA (optionally whitened) fitted on stored raw embeddings.

A projection maps encoder rows (n, d) to (n, k) and re-normalises them, so the inner product of
projected rows is again a cosine and every index type keeps working unchanged. It is fitted on a
seeded random sample of the stored rows, uncentred (eigendecomposition of the d x d second
moment, cheap for d <= 2048) so that inner products keep their ranking; the "variance" kept is
the share of that second moment. It is saved as a plain ``.npz`` (no pickle) and applied to
queries exactly as to the indexed rows. Specs: "none", "pca:128" (keep 128 axes), "pca:0.95"
(keep the fewest axes reaching that share), each optionally with ":whiten" (divide every axis by
the square root of its eigenvalue before re-normalising).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from xmodal.errors import CollectionCorruptError, CollectionError

log = logging.getLogger(__name__)

WHITEN_EPSILON = 1e-6
DEFAULT_SAMPLE = 100_000
_ACCEPTED = "'none', 'pca:N' (N axes), 'pca:F' (0 < F <= 1, share of variance), plus ':whiten'"
_TRANSFORM_ROWS = 65536


@dataclass(frozen=True)
class ProjectionSpec:
    """A parsed projection spec; ``str(spec)`` gives its canonical text."""

    kind: str
    n_components: int | None
    variance: float | None
    whiten: bool = False

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        # A share always keeps its decimal point: "pca:1.0" (all variance) is not "pca:1" (1 axis).
        amount = str(self.n_components) if self.n_components is not None else repr(self.variance)
        return f"pca:{amount}" + (":whiten" if self.whiten else "")


NO_PROJECTION = ProjectionSpec("none", None, None)


def parse_projection(text: str) -> ProjectionSpec:
    """Parse "none" | "pca:128" | "pca:0.95" | "pca:128:whiten" | "pca:0.95:whiten"."""
    cleaned = str(text).strip().lower()
    if cleaned in ("", "none"):
        return NO_PROJECTION
    parts = cleaned.split(":")
    whiten = len(parts) == 3 and parts[2] == "whiten"
    if parts[0] != "pca" or len(parts) not in (2, 3) or (len(parts) == 3 and not whiten):
        raise CollectionError(f"projection {text!r} is not understood; use {_ACCEPTED}")
    amount = parts[1]
    if amount.isdigit():
        if int(amount) < 1:
            raise CollectionError(f"projection {text!r} keeps no axis; use pca:N with N >= 1")
        return ProjectionSpec("pca", int(amount), None, whiten)
    try:
        share = float(amount)
    except ValueError:
        raise CollectionError(f"projection {text!r} is not understood; use {_ACCEPTED}") from None
    if not 0.0 < share <= 1.0:
        raise CollectionError(
            f"projection {text!r}: a share of variance must be in (0, 1], e.g. pca:0.95; "
            "for a fixed number of axes write an integer, e.g. pca:128"
        )
    return ProjectionSpec("pca", None, share, whiten)


@dataclass(frozen=True, eq=False)
class Projection:
    """A fitted PCA: ``transform`` centres, rotates onto the kept axes, whitens, re-normalises."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    total_variance: float
    whiten: bool

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_variance_ratio(self) -> float:
        """Share of the sample's total variance kept by the axes."""
        if self.total_variance <= 0:
            return 1.0
        return float(np.sum(self.explained_variance, dtype=np.float64) / self.total_variance)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, d) rows -> (n, k) float32 L2-normalised rows (rows projecting to zero stay zero)."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise CollectionError(
                f"projection expects rows of dim {self.in_dim}, got shape {x.shape}; pass raw "
                "encoder output of the encoder the collection was built with"
            )
        out = np.empty((len(x), self.out_dim), np.float32)
        scale = None
        if self.whiten:
            scale = (1.0 / np.sqrt(self.explained_variance + WHITEN_EPSILON)).astype(np.float32)
        for start in range(0, len(x), _TRANSFORM_ROWS):
            rows = np.asarray(x[start : start + _TRANSFORM_ROWS], np.float32) - self.mean
            block = rows @ self.components.T
            if scale is not None:
                block *= scale
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + len(block)] = block / np.where(norms > 0, norms, 1.0)
        return out

    def save(self, path: str | Path | IO[bytes]) -> None:
        """Write a plain ``.npz`` (a path is used as given: pass a name ending in .npz)."""
        arrays = {
            "mean": self.mean,
            "components": self.components,
            "explained_variance": self.explained_variance,
            "total_variance": np.float64(self.total_variance),
            "whiten": np.bool_(self.whiten),
        }
        if isinstance(path, str | Path):
            with open(path, "wb") as handle:
                np.savez(handle, **arrays)
        else:
            np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        """Read a file written by ``save`` (never unpickles); shapes are checked."""
        try:
            with np.load(path, allow_pickle=False) as data:
                projection = cls(
                    mean=np.asarray(data["mean"], np.float32),
                    components=np.asarray(data["components"], np.float32),
                    explained_variance=np.asarray(data["explained_variance"], np.float32),
                    total_variance=float(data["total_variance"]),
                    whiten=bool(data["whiten"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise CollectionCorruptError(
                f"projection file {path} is unreadable ({exc}); rebuild the collection's index "
                "with `xmodal reindex -c DIR --projection SPEC`"
            ) from exc
        k, d = projection.components.shape if projection.components.ndim == 2 else (0, 0)
        shapes = (projection.mean.shape, projection.explained_variance.shape)
        if not k or shapes != ((d,), (k,)):
            raise CollectionCorruptError(f"projection file {path} has inconsistent shapes")
        return projection


def fit_pca(
    vectors: np.ndarray,
    spec: ProjectionSpec,
    *,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> Projection:
    """Fit ``spec`` (kind "pca") on a seeded sample of at most ``sample_size`` rows."""
    if spec.kind != "pca":
        raise CollectionError(f"fit_pca needs a pca spec, got {str(spec)!r}")
    if vectors.ndim != 2 or len(vectors) < 2:
        raise CollectionError(
            f"a PCA projection needs at least 2 stored rows, got shape {vectors.shape}; "
            "add items before committing or use projection 'none'"
        )
    sample = _sample(vectors, sample_size, seed)
    n, d = sample.shape
    limit = min(d - 1, n - 1)
    if spec.n_components is not None and spec.n_components > limit:
        raise CollectionError(
            f"projection {str(spec)!r} keeps {spec.n_components} axes, but the {d}-d rows "
            f"(fitted on {n} of them) allow at most {limit}; choose a smaller N, a share like "
            "pca:0.95, or projection 'none'"
        )
    # Uncentred: the axes of the second moment E[x x^T], not of the covariance. Retrieval ranks
    # by inner products, and x.q keeps its ranking only if the projection is linear in x;
    # subtracting a mean first adds a per-row bias (-mean.x) that reorders close neighbours
    # (recall@10 against full-dim exact at pca:256 on benchmarks/search.py's 1M clustered rows:
    # 0.809 centred, benchmarks/results/search_run1_centred_pca.md; 0.892 uncentred, search.md).
    mean = np.zeros(d)
    covariance = sample.T @ sample / n
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    total = float(eigenvalues.sum())
    k = spec.n_components or _components_for(eigenvalues, total, spec.variance or 1.0, d)
    log.info("fitted %s on %d rows: %d -> %d dims", spec, n, d, k)
    return Projection(
        mean=mean.astype(np.float32),
        components=np.ascontiguousarray(eigenvectors[:, :k].T, np.float32),
        explained_variance=eigenvalues[:k].astype(np.float32),
        total_variance=total,
        whiten=spec.whiten,
    )


def _sample(vectors: np.ndarray, sample_size: int, seed: int) -> np.ndarray:
    """A seeded sample of rows as float64 (sorted positions: memmap-friendly reads)."""
    if len(vectors) <= sample_size:
        return np.asarray(vectors, np.float64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=sample_size, replace=False))
    return np.asarray(vectors[rows], np.float64)


def _components_for(eigenvalues: np.ndarray, total: float, share: float, limit: int) -> int:
    """The smallest k whose leading eigenvalues reach ``share`` of ``total`` (at most limit)."""
    if total <= 0:
        return 1
    reached = np.cumsum(eigenvalues) / total
    k = int(np.searchsorted(reached, share - 1e-9) + 1)
    return max(1, min(k, limit))

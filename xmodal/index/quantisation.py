"""Compressed storage of unit vectors (float16, int8, PQ codes, binary codes), with re-scoring.

Each kind is a FAISS index over inner product whose codes are what a store would keep per vector:

==========  ==========================================  ======================================
kind        FAISS                                       bytes per vector (dim d)
==========  ==========================================  ======================================
``fp32``    ``IndexFlatIP``                             4d (the reference)
``fp16``    ``IndexScalarQuantizer`` QT_fp16            2d
``int8``    ``IndexScalarQuantizer`` QT_8bit            d (per-dimension min/max, trained)
``pq[:M]``  ``IndexPQ``, M sub-quantizers of 8 bits     M (default: the largest divisor of d
                                                        that is at most d/8)
``binary``  ``IndexLSH`` d bits, per-dimension median   d/8 (Hamming distance)
            thresholds, no rotation
==========  ==========================================  ======================================

Coarse codes (PQ, binary) lose the order of close neighbours; ``search(..., rescore=F)`` takes
``F * k`` candidates from the codes and re-ranks them by the exact inner product with the
full-precision rows (which a collection keeps anyway as its raw embeddings).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np

from xmodal.errors import CollectionError

log = logging.getLogger(__name__)

KINDS = ("fp32", "fp16", "int8", "pq", "binary")
_ACCEPTED = "fp32, fp16, int8, pq, pq:M (M bytes per vector) or binary"


@dataclass(frozen=True)
class QuantisationSpec:
    """A parsed quantisation; ``str(spec)`` gives its canonical text."""

    kind: str
    pq_bytes: int | None = None

    def __str__(self) -> str:
        return f"pq:{self.pq_bytes}" if self.kind == "pq" and self.pq_bytes else self.kind

    @property
    def coarse(self) -> bool:
        """Codes coarse enough that re-scoring in full precision is worth reporting."""
        return self.kind in ("pq", "binary")


def parse_quantisation(text: str) -> QuantisationSpec:
    """Parse "fp32" | "fp16" | "int8" | "pq" | "pq:M" | "binary" (also float16, sq8, ...)."""
    cleaned = str(text).strip().lower()
    aliases = {"float16": "fp16", "float32": "fp32", "sq8": "int8", "bits": "binary"}
    cleaned = aliases.get(cleaned, cleaned)
    if cleaned in KINDS:
        return QuantisationSpec(cleaned)
    kind, _, amount = cleaned.partition(":")
    if kind == "pq" and amount.isdigit() and int(amount) > 0:
        return QuantisationSpec("pq", int(amount))
    raise CollectionError(f"quantisation {text!r} is not understood; use {_ACCEPTED}")


@dataclass(frozen=True, eq=False)
class QuantisedIndex:
    """A filled FAISS index holding ``vectors`` as codes, plus those rows for re-scoring."""

    spec: QuantisationSpec
    index: faiss.Index
    vectors: np.ndarray

    @property
    def bytes_per_vector(self) -> float:
        """Bytes of one stored code (binary and sub-byte PQ codes may round up in FAISS)."""
        if isinstance(self.index, faiss.IndexPQ):
            return self.index.pq.M * self.index.pq.nbits / 8
        return float(self.index.sa_code_size())

    def search(
        self, queries: np.ndarray, k: int, *, rescore: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row numbers), each (n, k), best first; higher scores are closer.

        With ``rescore`` F, F*k candidates from the codes are re-ranked by the exact inner
        product with the full-precision rows (and those exact scores are returned).
        """
        queries = np.ascontiguousarray(queries, np.float32)
        k = min(k, len(self.vectors))
        depth = min(k * max(rescore, 1), len(self.vectors))
        scores, found = self.index.search(queries, depth)
        if isinstance(self.index, faiss.IndexLSH):
            scores = -scores  # Hamming distances: smaller is closer
        if rescore <= 1:
            return scores[:, :k], found[:, :k]
        safe = np.where(found >= 0, found, 0)
        exact = np.einsum("nd,nkd->nk", queries, self.vectors[safe])
        exact = np.where(found >= 0, exact, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(found, order, axis=1)


def build_quantised(vectors: np.ndarray, spec: QuantisationSpec) -> QuantisedIndex:
    """Train (on ``vectors`` themselves, as a store would) and fill the index for ``spec``."""
    rows = np.ascontiguousarray(vectors, np.float32)
    n, dim = rows.shape
    index = _new(spec, n, dim)
    if not index.is_trained:
        index.train(rows)
    index.add(rows)
    return QuantisedIndex(spec, index, rows)


def default_pq_bytes(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most dim/8 (a 32x smaller code than fp32)."""
    limit = max(1, dim // 8)
    return max(m for m in range(1, limit + 1) if dim % m == 0)


def _new(spec: QuantisationSpec, n: int, dim: int) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "fp32":
        return faiss.IndexFlatIP(dim)
    if spec.kind in ("fp16", "int8"):
        quantizer = faiss.ScalarQuantizer
        qtype = quantizer.QT_fp16 if spec.kind == "fp16" else quantizer.QT_8bit
        return faiss.IndexScalarQuantizer(dim, qtype, ip)
    if spec.kind == "binary":
        return faiss.IndexLSH(dim, dim, False, True)
    m = spec.pq_bytes or default_pq_bytes(dim)
    if dim % m:
        raise CollectionError(
            f"quantisation {spec}: PQ needs a code size that divides the dimension {dim}; "
            f"try pq:{default_pq_bytes(dim)}"
        )
    # k-means needs at least as many training rows as centroids: small sets get fewer bits.
    nbits = max(1, min(8, int(math.log2(max(n, 2)))))
    if nbits < 8:
        log.warning("only %d rows to train PQ on: %d-bit codes instead of 8-bit", n, nbits)
    index = faiss.IndexPQ(dim, m, nbits, ip)
    index.pq.cp.min_points_per_centroid = 1  # small sets are expected here; FAISS would warn
    return index

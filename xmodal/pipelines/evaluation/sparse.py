"""Sparsified embeddings: keep the K largest-magnitude coordinates of each stored row.

A ``sparse:K`` row of the evaluation table shows what storing only K coordinates per vector costs
in recall. The gallery rows (what a collection stores) are sparsified and renormalised to unit
length; queries stay dense, as they are computed at query time and never stored, exactly as the
quantisation rows treat them. Size per vector assumes the usual sparse encoding: K fp16 values
plus K uint16 coordinate indices, ``K * (2 + 2)`` bytes (uint16 indices address up to 65,536
dimensions, far above any encoder's width). ``sparse:D`` (D = the dimension) keeps every
coordinate and equals exact search.
"""

from __future__ import annotations

import numpy as np

from xmodal.errors import XmodalError

VALUE_BYTES = 2  # fp16
INDEX_BYTES = 2  # uint16


def parse_sparse(text: str, dim: int) -> int:
    """K of ``sparse:K`` (or a bare K), checked against the dimension."""
    spec = text.strip().lower()
    number = spec.removeprefix("sparse:")
    try:
        k = int(number)
    except ValueError:
        raise XmodalError(f"bad sparsity {text!r}: write sparse:K with K a whole number") from None
    if not 1 <= k <= dim:
        raise XmodalError(f"bad sparsity {text!r}: K must be from 1 to the dimension {dim}")
    return k


def sparsify(rows: np.ndarray, k: int) -> np.ndarray:
    """Each row with all but its ``k`` largest-magnitude coordinates zeroed, renormalised."""
    rows = np.asarray(rows, np.float32)
    if k >= rows.shape[1]:
        return rows.copy()
    keep = np.argpartition(-np.abs(rows), k - 1, axis=1)[:, :k]
    out = np.zeros_like(rows)
    np.put_along_axis(out, keep, np.take_along_axis(rows, keep, axis=1), axis=1)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def bytes_per_vector(k: int) -> float:
    return float(k * (VALUE_BYTES + INDEX_BYTES))

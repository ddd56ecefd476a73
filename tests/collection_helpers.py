"""Helpers for the collection tests: random unit rows, records, and a built collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xmodal.index import Collection, Record

SPEC = {"model_id": "tiny/clip", "revision": "abc123", "dim": 64, "device": "cpu"}


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def records(n: int, prefix: str = "img") -> list[Record]:
    return [
        Record(f"{prefix}/{i:05d}.jpg", size=i, mtime=1.5 * i, caption=f"c{i}") for i in range(n)
    ]


def build_collection(root: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A committed Flat collection of 2000 random unit rows, d=64, at ``root / "c"``."""
    vectors = unit_rows(2000, 64)
    with Collection.create(root / "c", SPEC) as col:
        ids = col.add(vectors, records(2000))
        assert col.commit() == 1
    return root / "c", ids, vectors

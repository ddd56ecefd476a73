"""A small collection with planted exact copies, near copies and a chain, vectors made by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from collection_helpers import SPEC, unit_rows

from xmodal.index import Collection, Record

ODD = "/p/b/caf\udce9.jpg"  # a file name whose bytes are not UTF-8 (b"caf\xe9.jpg")
COS_CHAIN = 0.96


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def planted() -> tuple[np.ndarray, list[Record]]:
    """40 rows of d=64: exact pair 0-1, near group 2-5, chain 8-9-10, the rest singletons."""
    rng = np.random.default_rng(7)
    v = unit_rows(40, 64, seed=11)
    v[1] = v[0]
    for i in (3, 4, 5):
        v[i] = _unit(v[2] + 0.15 * _unit(rng.standard_normal(64)))
    u, w = np.linalg.qr(rng.standard_normal((64, 2)))[0].T
    theta = np.arccos(COS_CHAIN)
    for i, angle in zip((8, 9, 10), (0, theta, 2 * theta), strict=True):
        v[i] = _unit(np.cos(angle) * u + np.sin(angle) * w)
    recs = [Record(f"/p/x/{i:02d}.jpg", size=100 + i, mtime=1000.0 + i) for i in range(40)]
    recs[0] = Record("/p/a/orig.jpg", size=50, mtime=5.0, width=10, height=10, content_hash="h-a")
    recs[1] = Record("/p/a/copy.jpg", size=50, mtime=6.0, width=10, height=10, content_hash="h-a")
    recs[2] = Record("/p/b/first.jpg", size=5000, mtime=300.0, width=100, height=100)
    recs[3] = Record(ODD, size=1000, mtime=400.0, width=200, height=200)  # largest (pixels)
    recs[4] = Record("/p/b/newest.jpg", size=9000, mtime=500.0)  # pixels unknown
    recs[5] = Record("/p/b/oldest.jpg", size=10, mtime=100.0, width=50, height=50)
    return v, recs


def build_planted(root: Path) -> Path:
    vectors, recs = planted()
    with Collection.create(root / "planted", SPEC, index_key="flat") as col:
        col.add(vectors, recs)
        col.commit()
    return root / "planted"

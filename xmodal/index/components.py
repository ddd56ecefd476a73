"""Connected components of a graph whose edges arrive in batches: a vectorised union-find.

Edges come from blocked similarity searches (thousands of numpy arrays), so a per-edge Python
loop would dominate the run. Every root is the smallest index of its component and a parent is
never larger than its child, so the loops below only move pointers downwards and terminate.
Memory is one int64 per node, whatever the number of edges.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Disjoint sets over ``0..n-1``; ``union`` takes arrays of edge endpoints."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, nodes: np.ndarray) -> np.ndarray:
        """Roots of ``nodes`` (pointer jumping, vectorised)."""
        roots = self.parent[nodes]
        while True:
            up = self.parent[roots]
            if np.array_equal(up, roots):
                return roots
            roots = up

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the sets of ``a[i]`` and ``b[i]`` for every i."""
        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        while len(a):
            ra, rb = self.find(a), self.find(b)
            self.parent[a], self.parent[b] = ra, rb  # compress the endpoints' paths
            apart = ra != rb
            a, b = ra[apart], rb[apart]
            # Several edges may name the same larger root: the smallest partner wins this round
            # and the others are joined in the next (their roots then differ by less).
            np.minimum.at(self.parent, np.maximum(a, b), np.minimum(a, b))

    def labels(self) -> np.ndarray:
        """The root of every node: equal labels mean one component."""
        roots = self.parent
        while True:
            up = roots[roots]
            if np.array_equal(up, roots):
                self.parent = roots
                return roots.copy()
            roots = up

    def components(self, min_size: int = 2) -> list[np.ndarray]:
        """Sorted node arrays of the components with at least ``min_size`` nodes, by first node."""
        labels = self.labels()
        order = np.argsort(labels, kind="stable")
        _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        return [order[s : s + c] for s, c in zip(starts, counts, strict=True) if c >= min_size]

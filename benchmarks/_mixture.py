"""The seeded CLIP-like Gaussian mixture that ``search.py`` benchmarks on (see its docstring)."""

from __future__ import annotations

import numpy as np

ALPHA = 1.0
CLUSTERS = 2000
SPREAD = 0.6
WEIGHT_SIGMA = 0.5
OFFSET_NORM = 2.5
CHUNK = 100_000


class Mixture:
    """The seeded CLIP-like Gaussian mixture described in the module docstring."""

    def __init__(self, dim: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.scale = ((np.arange(dim) + 1.0) ** -ALPHA).astype(np.float32) ** 0.5
        self.centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32) * self.scale
        offset = rng.standard_normal(dim).astype(np.float32)
        self.centres += offset * (OFFSET_NORM / np.linalg.norm(offset))
        weights = rng.lognormal(0.0, WEIGHT_SIGMA, CLUSTERS)
        self.weights = weights / weights.sum()
        self.rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, len(self.scale)), np.float32)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            labels = rng.choice(CLUSTERS, size=m, p=self.weights)
            x = rng.standard_normal((m, len(self.scale)), dtype=np.float32)
            x *= SPREAD * self.scale
            x += self.centres[labels]
            x = x @ self.rotation
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start : start + m] = x
        return out


def recipe() -> dict:
    return {
        "kind": "Gaussian mixture, power-law spectrum, random rotation, L2-normalised",
        "spectrum": f"lambda_i = (i+1)^-{ALPHA}",
        "clusters": CLUSTERS,
        "shared_offset_norm": OFFSET_NORM,
        "cluster_weights": f"lognormal(0, {WEIGHT_SIGMA}), normalised",
        "within_cluster_spread": f"{SPREAD} * sqrt(lambda) per axis",
        "seeds": "mixture 0, base 1, queries 2",
        "queries": "held out: same mixture, independent stream, not base rows",
    }


def data_stats(base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """How hard the data is: top-1/top-10 similarity vs a random pair, participation ratio."""
    rng = np.random.default_rng(3)
    q = queries[:200]
    top = np.sort(np.einsum("qd,qkd->qk", q, base[truth[:200]]), axis=1)
    rand = np.einsum("qd,qd->q", q, base[rng.choice(len(base), len(q))])
    sample = base[rng.choice(len(base), min(len(base), 20_000), replace=False)]
    eig = np.linalg.eigvalsh(np.cov(sample, rowvar=False))
    return {
        "mean_top1_cosine": round(float(top[:, -1].mean()), 4),
        "mean_top10_cosine": round(float(top[:, 0].mean()), 4),
        "mean_random_pair_cosine": round(float(rand.mean()), 4),
        "participation_ratio": round(float(eig.sum() ** 2 / (eig**2).sum()), 1),
    }

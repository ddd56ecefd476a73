"""Commit-time projection management: fit, keep or drop the collection's projection, measure it.

The manifest's ``projection`` field holds the requested spec text ("none" when absent: manifests
written before projections open unchanged, format_version stays 1). At commit the projection is
fitted on the stored raw embeddings when none is fitted yet, when the spec changed, or when the
count grew past ``REFIT_GROWTH`` times the count it was fitted on; otherwise the stored one is kept
(so ids already in the index keep their coordinates). ``projection_fit`` records what was fitted
and ``recall_at_10``: exact search in the projected space against exact full-dimension search, on
the tuning recipe's sample queries (``tuning.sample_queries``), re-measured when the projection is
refitted or the count moved by more than ``RECALL_DRIFT``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from xmodal.errors import CollectionError
from xmodal.index import tuning
from xmodal.index.projection import (
    DEFAULT_SAMPLE,
    Projection,
    ProjectionSpec,
    fit_pca,
    parse_projection,
)
from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)

REFIT_GROWTH = 2.0
RECALL_K = 10
RECALL_SAMPLE = 1000
RECALL_DRIFT = 0.1


def spec_of(text: str | None) -> ProjectionSpec:
    """The requested projection (old manifests: none)."""
    return parse_projection(str(text or "none"))


def check_request(text: str, dim: int | None) -> ProjectionSpec:
    """Parse ``text`` and refuse a fixed size that cannot shrink rows of ``dim`` (when known)."""
    spec = parse_projection(text)
    if spec.n_components is not None and dim is not None and spec.n_components >= dim:
        raise CollectionError(
            f"projection {text!r} keeps {spec.n_components} axes but the embeddings have only "
            f"{dim}; choose pca:N with N < {dim}, a share like pca:0.95, or 'none'"
        )
    return spec


def plan(requested: str, fit: dict[str, Any] | None, store: VectorStore) -> Projection | None:
    """The projection the next generation should have (the store's own when it still fits).

    ``fit`` is the manifest's record of the current projection (None: none fitted yet).
    """
    spec = spec_of(requested)
    if spec.kind == "none":
        return None
    if store.dim is None or store.count == 0:
        return store.projection  # nothing to fit on yet
    fit = fit or {}
    current = store.projection
    grown = store.count > REFIT_GROWTH * int(fit.get("fit_count") or 0)
    if current is not None and fit.get("spec") == str(spec) and not grown:
        return current
    _, raw = store.raw_embeddings()
    return fit_pca(raw, spec)


def fit_record(
    projection: Projection | None,
    requested: str,
    last_fit: dict[str, Any] | None,
    store: VectorStore,
    *,
    refitted: bool,
) -> dict[str, Any] | None:
    """The manifest's record of ``projection`` over the live rows of ``store`` (None: none)."""
    spec = spec_of(requested)
    if projection is None:
        return None
    ids, raw = store.raw_embeddings()
    last = last_fit or {}
    record = dict(last) if not refitted else {"fit_count": len(ids)}
    record |= {
        "spec": str(spec),
        "in_dim": projection.in_dim,
        "out_dim": projection.out_dim,
        "explained_variance_ratio": projection.explained_variance_ratio,
        "whiten": projection.whiten,
        "fit_sample_size": min(int(record["fit_count"]), DEFAULT_SAMPLE),
    }
    measured = int(last.get("recall_count") or 0)
    if refitted or "recall_at_10" not in last or abs(len(ids) - measured) > RECALL_DRIFT * measured:
        recall, sample = projected_recall(projection, raw, ids)
        record |= {"recall_at_10": recall, "recall_sample_size": sample, "recall_count": len(ids)}
        log.info("projection %s: %d -> %d dims, recall@10 %.3f", spec, *_dims(projection), recall)
    return record


def projected_recall(
    projection: Projection,
    raw: np.ndarray,
    ids: np.ndarray,
    *,
    k: int = RECALL_K,
    sample_size: int = RECALL_SAMPLE,
    seed: int = 0,
) -> tuple[float, int]:
    """(recall@k of exact projected search vs exact full-dimension search, queries used)."""
    if len(ids) == 0:
        return 1.0, 0
    queries = tuning.sample_queries(raw, sample_size, seed)
    k = min(k, len(ids))
    truth = tuning.exact_top_k(raw, ids, queries, k)
    found = tuning.exact_top_k(projection.transform(raw), ids, projection.transform(queries), k)
    return tuning.recall_at_k(found, truth), len(queries)


def _dims(projection: Projection) -> tuple[int, int]:
    return projection.in_dim, projection.out_dim

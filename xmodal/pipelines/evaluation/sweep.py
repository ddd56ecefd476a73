"""One evaluation table: exact search, each projection, each ANN index, each quantisation.

Every row reports text-to-image and image-to-text recall@k (``recall.py``) in both directions.
Text-to-image searches the image rows (what a collection holds); image-to-text searches the
caption rows with the same method. Rows other than exact also report ``vs_exact``: recall@10 of
the ten rows they return against the exact full-dimension top ten, the cost of the shortcut
alone. Queries/s is the best of repeated batched searches of all queries of a direction, on one
thread.

Projections are fitted on the image rows, as a collection fits its projection on the stored
embeddings, and applied to both sides. Indexes and quantisations work on full-dimension rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xmodal.index import tuning
from xmodal.index.autoproject import check_request
from xmodal.index.projection import fit_pca
from xmodal.index.quantisation import (
    QuantisationSpec,
    QuantisedIndex,
    build_quantised,
    parse_quantisation,
)
from xmodal.pipelines.evaluation import indexes, sparse
from xmodal.pipelines.evaluation.embed import EmbeddedSet
from xmodal.pipelines.evaluation.indexes import Search, timed_qps
from xmodal.pipelines.evaluation.recall import (
    DEFAULT_KS,
    Pairing,
    chance_recall,
    exact_ranks,
    recall_at,
    searched_ranks,
)

log = logging.getLogger(__name__)

VS_EXACT_K = 10
DIRECTIONS = ("text_to_image", "image_to_text")


@dataclass(frozen=True)
class EvalConfig:
    """What to sweep. Specs are the CLI's texts: "pca:32", "auto", "hnsw", "int8", "pq:8"."""

    ks: tuple[int, ...] = DEFAULT_KS
    projections: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ("auto",)
    quantisations: tuple[str, ...] = ()
    sparsities: tuple[str, ...] = ()  # "sparse:K": see evaluation.sparse
    rescore: int = 10
    memory_budget: int | None = None
    curves: bool = True


@dataclass(frozen=True)
class EvalRow:
    """One method's recall in both directions, its size per vector, speed and cost vs exact."""

    method: str
    label: str
    dim: int
    bytes_per_vector: float
    recall: dict[str, dict[int, float]]
    vs_exact: dict[str, float] | None = None
    queries_per_s: dict[str, float] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    curve: tuple[indexes.CurvePoint, ...] = ()


@dataclass(frozen=True)
class EvalReport:
    """The table for one dataset and model, with the chance level of each recall."""

    dataset: str
    model: str
    n_images: int
    n_captions: int
    dim: int
    cached: bool
    failed_images: tuple[str, ...]
    chance: dict[str, dict[int, float]]
    rows: tuple[EvalRow, ...]


class _Sides:
    """Queries, gallery and pairing of each direction, plus their exact top-10 (lazily)."""

    def __init__(self, data: EmbeddedSet, transform: Callable[[np.ndarray], np.ndarray] | None):
        images, texts = data.image_vectors, data.text_vectors
        if transform is not None:
            images, texts = transform(images), transform(texts)
        n = len(data.image_vectors)
        self.sides = {
            "text_to_image": (texts, images, Pairing(data.caption_image, n, True)),
            "image_to_text": (images, texts, Pairing(data.caption_image, n, False)),
        }


def evaluate(data: EmbeddedSet, config: EvalConfig = EvalConfig()) -> EvalReport:
    """Every row of the table for ``data`` (specs are validated before any work)."""
    projections = [check_request(text, data.dim) for text in config.projections]
    quantisations = [parse_quantisation(text) for text in config.quantisations]
    sparsities = [sparse.parse_sparse(text, data.dim) for text in config.sparsities]
    full = _Sides(data, None)
    truth = {d: _exact_top(q, g, VS_EXACT_K) for d, (q, g, _) in full.sides.items()}
    rows = [_exact_row(full, data.dim, config)]
    for spec in projections:
        projection = fit_pca(data.image_vectors, spec)
        projected = _Sides(data, projection.transform)
        rows.append(_projection_row(str(spec), projected, projection.out_dim, truth, config))
    for key in config.indexes:
        rows.append(_index_row(full, key, truth, config))
    for spec in quantisations:
        rows.extend(_quantisation_rows(full, spec, truth, config))
    for k in sparsities:
        rows.append(_sparse_row(full, k, truth, config))
    for row in rows:
        log.info(
            "%s: recall@10 %s",
            row.label,
            {d: round(r[10], 3) for d, r in row.recall.items() if 10 in r},
        )
    return EvalReport(
        dataset=data.name,
        model=data.model,
        n_images=len(data.image_vectors),
        n_captions=len(data.text_vectors),
        dim=data.dim,
        cached=data.cached,
        failed_images=data.failed_images,
        chance=_chance(data, config.ks),
        rows=tuple(rows),
    )


def _exact_row(full: _Sides, dim: int, config: EvalConfig) -> EvalRow:
    recall, speed = {}, {}
    for direction, (queries, gallery, pairing) in full.sides.items():
        recall[direction] = recall_at(exact_ranks(queries, gallery, pairing), config.ks)
        flat = build_quantised(gallery, parse_quantisation("fp32"))
        speed[direction] = timed_qps(lambda q, k, f=flat: f.search(q, k), queries, VS_EXACT_K)
    return EvalRow("exact", "exact fp32", dim, 4.0 * dim, recall, None, speed)


def _projection_row(
    label: str, sides: _Sides, dim: int, truth: dict[str, np.ndarray], config: EvalConfig
) -> EvalRow:
    recall, vs_exact, speed = {}, {}, {}
    for direction, (queries, gallery, pairing) in sides.sides.items():
        recall[direction] = recall_at(exact_ranks(queries, gallery, pairing), config.ks)
        found = _exact_top(queries, gallery, VS_EXACT_K)
        vs_exact[direction] = tuning.recall_at_k(found, truth[direction])
        flat = build_quantised(gallery, parse_quantisation("fp32"))
        speed[direction] = timed_qps(lambda q, k, f=flat: f.search(q, k), queries, VS_EXACT_K)
    return EvalRow("projection", label, dim, 4.0 * dim, recall, vs_exact, speed)


def _index_row(full: _Sides, key: str, truth: dict[str, np.ndarray], config: EvalConfig) -> EvalRow:
    built = {
        d: indexes.build_index(g, key, config.memory_budget) for d, (_, g, _) in full.sides.items()
    }
    searches = {d: b.search for d, b in built.items()}
    recall, vs_exact, speed = measure(full, searches, truth, config.ks)
    main = built["text_to_image"]
    queries, _, pairing = full.sides["text_to_image"]
    points = indexes.curve(main, queries, truth["text_to_image"], pairing) if config.curves else ()
    params = {
        "factory": main.factory,
        "kind": main.kind,
        "search_params": main.params,
        "tuned_recall_at_10": main.tuned_recall,
        "reason": main.reason,
    }
    dim = int(queries.shape[1])
    size = indexes.bytes_per_vector(main)
    label = indexes.describe(main)
    return EvalRow("index", label, dim, size, recall, vs_exact, speed, params, points)


def _quantisation_rows(
    full: _Sides, spec: QuantisationSpec, truth: dict[str, np.ndarray], config: EvalConfig
) -> list[EvalRow]:
    built = {d: build_quantised(g, spec) for d, (_, g, _) in full.sides.items()}
    factors = [0, config.rescore] if spec.coarse and config.rescore > 1 else [0]
    rows = []
    for factor in factors:
        label = str(spec) + (f" rescored x{factor}" if factor else "")
        searches = {d: _quantised_search(built[d], factor) for d in built}
        recall, vs_exact, speed = measure(full, searches, truth, config.ks)
        size = built["text_to_image"].bytes_per_vector
        params = {"rescore": factor} if factor else {}
        dim = int(full.sides["text_to_image"][1].shape[1])
        rows.append(EvalRow("quantisation", label, dim, size, recall, vs_exact, speed, params))
    return rows


def _sparse_row(full: _Sides, k: int, truth: dict[str, np.ndarray], config: EvalConfig) -> EvalRow:
    """Gallery rows sparsified to ``k`` coordinates, dense queries, exact search."""
    recall, vs_exact = {}, {}
    for direction, (queries, gallery, pairing) in full.sides.items():
        kept = sparse.sparsify(gallery, k)
        recall[direction] = recall_at(exact_ranks(queries, kept, pairing), config.ks)
        found = _exact_top(queries, kept, VS_EXACT_K)
        vs_exact[direction] = tuning.recall_at_k(found, truth[direction])
    dim = int(full.sides["text_to_image"][1].shape[1])
    size = sparse.bytes_per_vector(k)
    params = {"kept": k, "encoding": "fp16 values + uint16 indices"}
    # No queries/s: the rows are searched densified, which says nothing of a sparse index.
    return EvalRow("sparse", f"sparse:{k}", dim, size, recall, vs_exact, {}, params)


def _quantised_search(index: QuantisedIndex, factor: int) -> Search:
    return lambda queries, k: index.search(queries, k, rescore=factor)


def measure(
    sides: _Sides, searches: dict[str, Search], truth: dict[str, np.ndarray], ks: tuple[int, ...]
) -> tuple[dict, dict, dict]:
    """(recall per direction, recall@10 vs exact per direction, queries/s per direction)."""
    depth = max(max(ks), VS_EXACT_K)
    recall, vs_exact, speed = {}, {}, {}
    for direction, (queries, gallery, pairing) in sides.sides.items():
        search = searches[direction]
        ranks, _, found = searched_ranks(search, queries, depth, pairing, len(gallery), max(ks))
        recall[direction] = recall_at(ranks, ks)
        vs_exact[direction] = tuning.recall_at_k(found[:, :VS_EXACT_K], truth[direction])
        speed[direction] = timed_qps(search, queries, depth)
    return recall, vs_exact, speed


def _exact_top(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row numbers (unordered) in chunks of queries: bounded memory."""
    ids = np.arange(len(gallery), dtype=np.int64)
    k = min(k, len(gallery))
    parts = [
        tuning.exact_top_k(gallery, ids, queries[start : start + 2048], k)
        for start in range(0, len(queries), 2048)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, k), np.int64)


def _chance(data: EmbeddedSet, ks: tuple[int, ...]) -> dict[str, dict[int, float]]:
    n_images, n_captions = len(data.image_vectors), len(data.text_vectors)
    per_image = n_captions / max(n_images, 1)
    return {
        "text_to_image": {k: chance_recall(n_images, 1, k) for k in ks},
        "image_to_text": {k: chance_recall(n_captions, per_image, k) for k in ks},
    }

"""Projections, indexes and quantisation in the eval table: sane sizes and monotone trends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal.errors import CollectionError
from xmodal.index.quantisation import build_quantised, default_pq_bytes, parse_quantisation
from xmodal.pipelines.evaluation import EmbeddedSet, EvalConfig, evaluate
from xmodal.pipelines.evaluation.report import summary, to_dict

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def clustered() -> EmbeddedSet:
    """600 images in 60 clusters (power-law spectrum), 2 noisy captions each."""
    rng = np.random.default_rng(0)
    scale = (np.arange(DIM) + 1.0) ** -0.5
    centres = rng.standard_normal((60, DIM)) * scale
    images = _unit(
        centres[rng.integers(60, size=600)] + 0.5 * rng.standard_normal((600, DIM)) * scale
    )
    owner = np.repeat(np.arange(600), 2)
    texts = _unit(images[owner] + 0.08 * rng.standard_normal((1200, DIM)))
    return EmbeddedSet("clustered", "synthetic", images, texts, owner)


@pytest.fixture(scope="module")
def report(clustered: EmbeddedSet):
    config = EvalConfig(
        projections=("pca:32", "pca:16", "pca:4"),
        indexes=("auto", "hnsw", "ivf-flat"),
        quantisations=("fp16", "int8", "pq", "binary"),
    )
    return evaluate(clustered, config)


def _row(report, label: str):
    return next(row for row in report.rows if row.label == label)


def test_exact_row_is_high_and_far_above_chance(report) -> None:
    exact = report.rows[0]
    assert exact.method == "exact" and exact.dim == DIM and exact.bytes_per_vector == 4 * DIM
    assert exact.recall["text_to_image"][10] > 0.9
    assert report.chance["text_to_image"][10] == pytest.approx(10 / 600)
    assert report.chance["image_to_text"][1] == pytest.approx(2 / 1200)


def test_projection_recall_falls_with_dimension(report) -> None:
    rows = [_row(report, spec) for spec in ("pca:32", "pca:16", "pca:4")]
    assert [r.dim for r in rows] == [32, 16, 4]
    assert [r.bytes_per_vector for r in rows] == [128, 64, 16]
    vs = [r.vs_exact["text_to_image"] for r in rows]
    assert vs[0] >= vs[1] >= vs[2] and vs[0] > vs[2] + 0.1
    task = [r.recall["text_to_image"][10] for r in rows]
    assert task[0] >= task[2] and report.rows[0].recall["text_to_image"][10] >= task[0] - 0.01


def test_quantisation_sizes_and_order(report) -> None:
    sizes = {r.label: r.bytes_per_vector for r in report.rows if r.method == "quantisation"}
    pq = default_pq_bytes(DIM)
    assert sizes == {
        "fp16": 2 * DIM,
        "int8": DIM,
        "pq": pq,
        "pq rescored x10": pq,
        "binary": DIM / 8,
        "binary rescored x10": DIM / 8,
    }
    vs = {label: _row(report, label).vs_exact["text_to_image"] for label in sizes}
    assert vs["fp16"] >= 0.99
    assert vs["fp16"] >= vs["int8"] >= vs["pq"] - 0.01
    assert vs["int8"] > vs["binary"]
    # Re-scoring the top candidates in full precision recovers most of what the codes lost.
    assert vs["pq rescored x10"] > vs["pq"] and vs["pq rescored x10"] > 0.95
    assert vs["binary rescored x10"] > vs["binary"] + 0.1


def test_index_rows_report_factory_tuning_and_a_curve(report) -> None:
    auto = next(r for r in report.rows if r.method == "index" and r.label.startswith("auto"))
    assert auto.params["factory"] == "Flat" and auto.vs_exact["text_to_image"] == 1.0
    hnsw = next(r for r in report.rows if r.label.startswith("hnsw -> HNSW32 efSearch="))
    assert hnsw.params["tuned_recall_at_10"] >= 0.95
    assert hnsw.vs_exact["text_to_image"] >= 0.9
    values = [p.value for p in hnsw.curve]
    assert values[0] == 16 and values == [16 * 2**i for i in range(len(values))]
    ivf = next(r for r in report.rows if r.label.startswith("ivf-flat -> IVF"))
    recalls = [p.vs_exact for p in ivf.curve]
    assert recalls == sorted(recalls) and recalls[-1] == pytest.approx(1.0)  # nprobe = nlist


def test_report_renders_as_table_and_json(report) -> None:
    text = summary(report)
    assert "| exact fp32 | 64 | 256 |" in text and "| chance |" in text
    data = json.loads(json.dumps(to_dict(report)))
    assert data["rows"][0]["recall"]["text_to_image"]["R@10"] == pytest.approx(
        report.rows[0].recall["text_to_image"][10], abs=1e-4
    )


def test_bad_specs_are_refused_before_any_work(clustered: EmbeddedSet) -> None:
    with pytest.raises(CollectionError, match="keeps 64 axes but the embeddings have only 64"):
        evaluate(clustered, EvalConfig(projections=("pca:64",)))
    with pytest.raises(CollectionError, match="quantisation 'int4' is not understood"):
        evaluate(clustered, EvalConfig(quantisations=("int4",)))
    with pytest.raises(CollectionError, match="PQ needs a code size that divides the dimension"):
        build_quantised(clustered.image_vectors, parse_quantisation("pq:7"))


def test_opq_on_fewer_rows_than_dimensions_is_refused_not_crashed() -> None:
    from xmodal.pipelines.evaluation.indexes import build_index

    rows = _unit(np.random.default_rng(1).standard_normal((40, DIM)))
    with pytest.raises(
        CollectionError, match=r"needs at least 64 vectors to train its OPQ rotation"
    ):
        build_index(rows, "OPQ8_64,IVF1,PQ8")


def test_rescoring_returns_exact_scores_best_first(clustered: EmbeddedSet) -> None:
    codes = build_quantised(clustered.image_vectors, parse_quantisation("binary"))
    scores, found = codes.search(clustered.text_vectors[:20], 5, rescore=4)
    exact = np.einsum("nd,nkd->nk", clustered.text_vectors[:20], clustered.image_vectors[found])
    assert np.allclose(scores, exact, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_repeated_captions_rank_the_same_on_exact_and_on_a_flat_index() -> None:
    """60 images, 3 caption texts written under 20 images each (as the demo world repeats
    its captions): a caption's 19 twins tie with it, more than a top-10 list holds. The Flat
    index must count them as the full score matrix does, not only the twins it happened to list.
    """
    rng = np.random.default_rng(1)
    prototypes = _unit(rng.standard_normal((3, DIM)))
    owner_text = np.repeat(np.arange(3), 20)
    images = _unit(prototypes[owner_text] + 0.3 * rng.standard_normal((60, DIM)))
    texts = prototypes[owner_text].copy()  # caption i belongs to image i; identical text rows
    data = EmbeddedSet("repeats", "synthetic", images, texts, np.arange(60))
    report = evaluate(data, EvalConfig(indexes=("flat",), quantisations=("fp16",)))
    exact, flat, fp16 = report.rows
    assert (exact.label, flat.label) == ("exact fp32", "flat -> Flat")
    assert flat.recall == exact.recall
    assert fp16.recall["image_to_text"] == exact.recall["image_to_text"]  # fp16 codes tie too
    # Image to text: 19 tied negatives put every positive at rank 20.
    assert exact.recall["image_to_text"] == {1: 0.0, 5: 0.0, 10: 0.0}

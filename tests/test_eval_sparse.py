"""sparse:K rows of the eval table: sparse:D is exact, recall grows with K, sizes are K*4 bytes."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.errors import XmodalError
from xmodal.pipelines.evaluation import EmbeddedSet, EvalConfig, evaluate
from xmodal.pipelines.evaluation.report import summary, to_dict
from xmodal.pipelines.evaluation.sparse import parse_sparse, sparsify

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic() -> EmbeddedSet:
    """300 images in 30 clusters, 2 noisy captions each, dense in every coordinate."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((30, DIM))
    images = _unit(centres[rng.integers(30, size=300)] + 0.6 * rng.standard_normal((300, DIM)))
    owner = np.repeat(np.arange(300), 2)
    texts = _unit(images[owner] + 0.4 * rng.standard_normal((600, DIM)))
    return EmbeddedSet("synthetic", "synthetic", images, texts, owner)


@pytest.fixture(scope="module")
def report(synthetic: EmbeddedSet):
    config = EvalConfig(
        indexes=(), sparsities=("sparse:2", "sparse:8", "sparse:32", f"sparse:{DIM}")
    )
    return evaluate(synthetic, config)


def test_sparse_at_full_dimension_equals_exact(report) -> None:
    exact = report.rows[0]
    full = next(row for row in report.rows if row.label == f"sparse:{DIM}")
    assert full.recall == exact.recall
    assert full.vs_exact == {"text_to_image": 1.0, "image_to_text": 1.0}


def test_recall_rises_from_few_coordinates_to_all(report) -> None:
    rows = {row.label: row for row in report.rows if row.method == "sparse"}
    for direction in ("text_to_image", "image_to_text"):
        fewest = rows["sparse:2"].recall[direction][1]
        most = rows[f"sparse:{DIM}"].recall[direction][1]
        assert fewest < most - 0.2  # the extremes, not the noise in between
        assert rows["sparse:2"].vs_exact[direction] < rows["sparse:32"].vs_exact[direction]


def test_sizes_are_fp16_values_plus_uint16_indices(report) -> None:
    sizes = {row.label: row.bytes_per_vector for row in report.rows if row.method == "sparse"}
    assert sizes == {"sparse:2": 8.0, "sparse:8": 32.0, "sparse:32": 128.0, "sparse:64": 256.0}
    assert "sparse:8" in summary(report)
    assert [r["label"] for r in to_dict(report)["rows"]][-1] == "sparse:64"


def test_sparsify_keeps_the_largest_magnitudes_and_renormalises() -> None:
    row = np.array([[0.1, -0.9, 0.3, 0.2]], np.float32)
    kept = sparsify(row, 2)
    expected = np.array([[0.0, -0.9, 0.3, 0.0]]) / np.hypot(0.9, 0.3)
    np.testing.assert_allclose(kept, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sparse:0", "bad sparsity 'sparse:0': K must be from 1 to the dimension 64"),
        ("sparse:65", "bad sparsity 'sparse:65': K must be from 1 to the dimension 64"),
        ("sparse:x", "bad sparsity 'sparse:x': write sparse:K with K a whole number"),
    ],
)
def test_bad_sparsity_is_one_line(text: str, message: str) -> None:
    with pytest.raises(XmodalError) as caught:
        parse_sparse(text, DIM)
    assert str(caught.value) == message

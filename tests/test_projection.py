"""The low-rank projection: spec parsing, PCA fitting, and a projected collection end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmodal.cli import main
from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import Collection, Record
from xmodal.index.projection import (
    WHITEN_EPSILON,
    Projection,
    ProjectionSpec,
    fit_pca,
    parse_projection,
)

SPEC = {"model_id": "tiny/clip", "revision": "abc123", "dim": 64, "device": "cpu"}


# ----------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", ProjectionSpec("none", None, None)),
        ("pca:128", ProjectionSpec("pca", 128, None)),
        ("pca:0.95", ProjectionSpec("pca", None, 0.95)),
        ("PCA:128:whiten", ProjectionSpec("pca", 128, None, True)),
        ("pca:0.95:whiten", ProjectionSpec("pca", None, 0.95, True)),
        ("pca:1.0", ProjectionSpec("pca", None, 1.0)),
    ],
)
def test_parse_projection_forms(text: str, expected: ProjectionSpec) -> None:
    assert parse_projection(text) == expected
    assert parse_projection(str(expected)) == expected  # the canonical text parses back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pca", "'pca' is not understood; use 'none', 'pca:N'"),
        ("svd:8", "'svd:8' is not understood"),
        ("pca:8:white", "'pca:8:white' is not understood"),
        ("pca:abc", "'pca:abc' is not understood"),
        ("pca:0", "'pca:0' keeps no axis; use pca:N with N >= 1"),
        ("pca:1.5", "'pca:1.5': a share of variance must be in (0, 1]"),
        ("pca:-0.5", "a share of variance must be in (0, 1], e.g. pca:0.95"),
        ("pca:nan", "a share of variance must be in (0, 1]"),
    ],
)
def test_parse_projection_errors(text: str, message: str) -> None:
    with pytest.raises(CollectionError) as caught:
        parse_projection(text)
    assert message in str(caught.value)


# ----------------------------------------------------------------- fitting
def low_rank(
    n: int, d: int, r: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows = latent (n, r) @ orthonormal basis (r, d) + isotropic noise; and the signal share."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T
    scales = np.linspace(3.0, 1.0, r)
    rows = (rng.standard_normal((n, r)) * scales) @ basis + noise * rng.standard_normal((n, d))
    signal = float(np.sum(scales**2))
    return rows, basis, signal / (signal + d * noise**2)


def test_pca_recovers_the_subspace_and_its_variance_share() -> None:
    rows, basis, share = low_rank(20_000, 64, 8, 0.1, seed=1)
    projection = fit_pca(rows, parse_projection("pca:8"))
    assert (projection.in_dim, projection.out_dim) == (64, 8)
    assert projection.explained_variance_ratio == pytest.approx(share, abs=0.01)
    # The kept axes span the true subspace: every singular value of the overlap is close to 1.
    overlap = np.linalg.svd(projection.components @ basis.T, compute_uv=False)
    assert overlap.min() > 0.99
    assert np.all(np.diff(projection.explained_variance) <= 0)


def test_variance_share_picks_the_smallest_k() -> None:
    rows, _, share = low_rank(20_000, 64, 6, 0.02, seed=2)
    assert share > 0.99  # six axes hold almost everything; five cannot reach 95 %
    chosen = fit_pca(rows, parse_projection("pca:0.95"))
    full = fit_pca(rows, parse_projection("pca:63"))
    reached = np.cumsum(full.explained_variance) / full.total_variance
    expected = int(np.searchsorted(reached, 0.95) + 1)
    assert chosen.out_dim == expected
    assert chosen.explained_variance_ratio >= 0.95 > reached[expected - 2]
    assert fit_pca(rows, parse_projection("pca:0.999")).out_dim > expected


def test_whitening_gives_unit_variance_per_axis() -> None:
    rows, _, _ = low_rank(5000, 32, 8, 0.1, seed=3)
    projection = fit_pca(rows, parse_projection("pca:8:whiten"))
    assert projection.whiten
    centred = (rows - projection.mean) @ projection.components.T
    whitened = centred / np.sqrt(projection.explained_variance + WHITEN_EPSILON)
    assert np.var(whitened, axis=0, ddof=1) == pytest.approx(np.ones(8), rel=1e-3)


def test_transform_normalises_rows_and_keeps_zero_rows_zero() -> None:
    rows, _, _ = low_rank(2000, 32, 4, 0.1, seed=4)
    for text in ("pca:6", "pca:6:whiten"):
        projection = fit_pca(rows, parse_projection(text))
        out = projection.transform(np.vstack([rows[:50], projection.mean[None, :]]))
        assert out.dtype == np.float32 and out.shape == (51, 6)
        assert np.linalg.norm(out[:50], axis=1) == pytest.approx(np.ones(50), abs=1e-5)
        assert not out[50].any()  # the mean projects to zero and is not divided by zero
    with pytest.raises(CollectionError, match="projection expects rows of dim 32"):
        projection.transform(np.ones((2, 16), np.float32))


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    rows, _, _ = low_rank(3000, 32, 4, 0.1, seed=5)
    projection = fit_pca(rows, parse_projection("pca:0.9:whiten"), sample_size=1000, seed=7)
    path = tmp_path / "p.npz"
    projection.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {
            "mean",
            "components",
            "explained_variance",
            "total_variance",
            "whiten",
        }
    loaded = Projection.load(path)
    assert loaded.whiten and loaded.total_variance == projection.total_variance
    np.testing.assert_array_equal(loaded.components, projection.components)
    np.testing.assert_array_equal(loaded.transform(rows[:20]), projection.transform(rows[:20]))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CollectionCorruptError, match="is unreadable"):
        Projection.load(path)


def test_fit_refuses_sizes_it_cannot_honour() -> None:
    rows, _, _ = low_rank(500, 16, 4, 0.1, seed=6)
    with pytest.raises(CollectionError) as caught:
        fit_pca(rows, parse_projection("pca:16"))
    assert "keeps 16 axes, but the 16-d rows (fitted on 500 of them) allow at most 15" in str(
        caught.value
    )
    with pytest.raises(CollectionError, match="allow at most 9; choose a smaller N"):
        fit_pca(rows[:10], parse_projection("pca:12"))
    with pytest.raises(CollectionError, match="needs at least 2 stored rows"):
        fit_pca(rows[:1], parse_projection("pca:0.9"))


# ----------------------------------------------------------------- a projected collection
def clustered(n: int, seed: int) -> np.ndarray:
    """Unit 64-d rows in 20 clusters spread over a 12-d subspace, stored exactly by float16."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((64, 12)))[0].T
    centres = rng.standard_normal((20, 12))
    latent = centres[rng.integers(0, 20, n)] + 0.35 * rng.standard_normal((n, 12))
    rows = latent @ basis + 0.03 * rng.standard_normal((n, 64))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float16).astype(np.float32)


def records(n: int, start: int = 0) -> list[Record]:
    return [Record(f"/img/{'a' if i % 3 else 'b'}{i:05d}.jpg") for i in range(start, start + n)]


def brute(rows: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ rows.T
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def stored_projection(directory: Path) -> Projection:
    manifest = json.loads((directory / "manifest.json").read_text())
    return Projection.load(directory / manifest["projection_file"]["name"])


def hit_ids(col: Collection, queries: np.ndarray, k: int, where: str | None = None) -> np.ndarray:
    return np.array([[h.id for h in row] for row in col.search(queries, k, where=where)])


def test_projected_collection_searches_in_the_projected_space(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    rows, queries = clustered(3000, seed=10), clustered(40, seed=11)
    with Collection.create(directory, SPEC, projection="pca:16") as col:
        ids = col.add(rows, records(3000))
        col.commit()
        info = col.info()
        assert (info.projection, info.dim) == ("pca:16", 64)
        assert (info.projection_in_dim, info.projection_out_dim) == (64, 16)
        assert info.projection_explained_variance > 0.95
        assert info.projection_recall_at_10 >= 0.85 and info.projection_sample_queries == 1000
        (segment,) = json.loads((directory / "manifest.json").read_text())["segments"]
        index_name = segment["index"]
        assert faiss.read_index(str(directory / index_name["name"])).d == 16

        projection = stored_projection(directory)
        projected = projection.transform(rows)
        expected = brute(projected, ids, projection.transform(queries), 10)
        np.testing.assert_array_equal(hit_ids(col, queries, 10), expected)
        scores = [h.score for h in col.search(queries[:1], 3)[0]]
        assert scores == pytest.approx(
            projected[expected[0, :3] - ids[0]] @ projection.transform(queries[:1])[0], abs=1e-5
        )

        # Filtered search (exact over a subset) uses the same projected space.
        allowed = np.array([i for i, r in zip(ids, records(3000), strict=True) if "/b" in r.path])
        sub = brute(projected[allowed - ids[0]], allowed, projection.transform(queries), 5)
        np.testing.assert_array_equal(hit_ids(col, queries, 5, "path:/img/b*"), sub)

        # Staged rows are projected with the current projection and searchable before commit.
        extra = clustered(200, seed=12)
        new_ids = col.add(extra, records(200, start=3000))
        both = np.vstack([projected, projection.transform(extra)])
        expected_all = brute(
            both, np.concatenate([ids, new_ids]), projection.transform(queries), 10
        )
        np.testing.assert_array_equal(hit_ids(col, queries, 10), expected_all)
        col.commit()
        assert col.info().projection_out_dim == 16  # kept, not refitted: grew by less than 2x
        assert stored_projection(directory).components.tobytes() == projection.components.tobytes()

    with Collection.open(directory) as reopened:
        np.testing.assert_array_equal(hit_ids(reopened, queries, 10), expected_all)
        with pytest.raises(CollectionError, match="dim"):
            reopened.search(np.ones((1, 16), np.float32) / 4.0)  # queries stay encoder-dim


def test_reindex_without_projection_restores_full_dimension(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    rows, queries = clustered(1500, seed=20), clustered(30, seed=21)
    with Collection.create(directory, SPEC, projection="pca:0.9:whiten") as col:
        ids = col.add(rows, records(1500))
        col.commit()
        assert col.info().projection == "pca:0.9:whiten" and col.info().projection_whiten
        assert col.info().projection_out_dim < 16
    with Collection.open(directory, writable=True) as col:
        col.set_index("auto", projection="none")
        col.commit()
        info = col.info()
        assert info.projection == "none" and info.projection_out_dim is None
        np.testing.assert_array_equal(hit_ids(col, queries, 10), brute(rows, ids, queries, 10))
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["projection_file"] is None
    assert not list(directory.glob("projection.*"))  # the old generation's file was swept


def test_truncated_projection_file_is_refused_by_checksum(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC, projection="pca:8") as col:
        col.add(clustered(300, seed=30), records(300))
        col.commit()
    manifest = json.loads((directory / "manifest.json").read_text())
    entry = manifest["projection_file"]
    assert entry["name"] == "projection.g000001.npz" and len(entry["sha256"]) == 64
    path = directory / entry["name"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CollectionCorruptError, match="projection.g000001.npz is damaged"):
        Collection.open(directory)


def test_projection_requests_are_checked_and_old_manifests_open(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="keeps 64 axes but the embeddings have only 64"):
        Collection.create(tmp_path / "bad", SPEC, projection="pca:64")
    with pytest.raises(CollectionError, match="'pca:x' is not understood"):
        Collection.create(tmp_path / "bad", SPEC, projection="pca:x")
    directory = tmp_path / "old"
    with Collection.create(directory, SPEC) as col:
        col.add(clustered(50, seed=40), records(50))
        col.commit()
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("projection", "projection_fit"):
        manifest.pop(key, None)
    path.write_text(json.dumps(manifest))
    with Collection.open(directory) as col:
        assert col.info().projection == "none" and col.info().projection_recall_at_10 is None


def test_cli_index_with_projection_and_info(
    tmp_path: Path,
    captioned_photos: list[Path],
    tiny_clip_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in captioned_photos[:20]:
        shutil.copy(photo, photos / photo.name)
    col = tmp_path / "col"
    argv = ["index", photos, "-c", col, "--model", tiny_clip_dir, "--workers", "0"]
    assert main([str(a) for a in [*argv, "--projection", "pca:8"]]) == 0
    capsys.readouterr()
    assert main(["info", "-c", str(col)]) == 0
    out = capsys.readouterr().out
    assert "projection  pca:8 (16 -> 8 dims, " in out and "recall@10 " in out
    assert main(["info", "-c", str(col), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["projection"], data["projection_out_dim"], data["dim"]) == ("pca:8", 8, 16)
    assert 0 < data["projection_explained_variance"] <= 1
    assert main(["search", "-c", str(col), "a photo", "-k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 5
    assert main(["reindex", "-c", str(col), "--projection", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["projection"] == "none" and data["projection_out_dim"] is None
    assert main(["reindex", "-c", str(col), "--projection", "pca:99"]) == 1
    assert "keeps 99 axes but the embeddings have only 16" in capsys.readouterr().err

"""SigLIP 2 NaFlex through every path, and multilingual queries through CLI, API and Python.

NaFlex: aspect ratio kept under the patch budget, xmodal's pipeline equal to the processor's
own output, mixed shapes in one batch, picklable workers, and a collection that indexes
(``xmodal index`` with a decoding worker) and answers text and image queries. Multilingual: a
Chinese and an Arabic query give the same ids through ``xmodal search``, ``POST /api/search``
and ``Retriever.search``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.cli import main
from xmodal.demo.tiny import save_tiny
from xmodal.encoders import load_encoder
from xmodal.encoders.naflex import unpack
from xmodal.encoders.preprocess import Preparer
from xmodal.images import load_image
from xmodal.index import Collection
from xmodal.pipelines.search import Retriever

QUERIES = ["一只猫坐在窗台上", "قطة تجلس على النافذة"]


@pytest.fixture(scope="module")
def naflex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny("siglip2-naflex", tmp_path_factory.mktemp("naflex"), seed=0)


@pytest.fixture(scope="module")
def naflex(naflex_dir: Path):
    return load_encoder(naflex_dir, device="cpu", precision="fp32")


def photo_list(tmp_path: Path, photos: list[Path]) -> Path:
    """An @LIST source of shared photos, read in place."""
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    return listing


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_naflex_keeps_the_aspect_ratio_under_the_patch_budget(naflex) -> None:
    shapes = {}
    for name, size in {"wide": (400, 100), "tall": (90, 360), "square": (64, 64)}.items():
        packed = naflex.preprocess(Image.new("RGB", size, (10, 200, 30)))
        assert packed.shape == (257, 16 * 16 * 3)  # one row of shape + 256 patch rows, always
        _, mask, spatial = unpack(packed[None])
        rows, cols = (int(v) for v in spatial[0])
        assert rows * cols <= 256 and int(mask.sum()) == rows * cols
        shapes[name] = (rows, cols)
    assert shapes["wide"][1] == 4 * shapes["wide"][0]  # 400x100 -> 8x32 patches
    assert shapes["tall"][0] == 4 * shapes["tall"][1]
    assert shapes["square"] == (16, 16)  # small images are scaled up to the budget


def test_naflex_pipeline_equals_the_processor_output(naflex, captioned_photos: list[Path]) -> None:
    """xmodal's NaFlex pipeline and the processor fallback pack the same numbers."""
    fallback = Preparer(None, naflex.processor.image_processor, naflex.preparer.call_kwargs)
    for path in captioned_photos[:6]:
        image = load_image(path)
        ours, theirs = naflex.preprocess(image), fallback.preprocess(image)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_naflex_batches_of_mixed_shapes_match_one_by_one(naflex) -> None:
    images = [Image.new("RGB", s, c) for s, c in [((300, 80), "red"), ((50, 200), "blue")]]
    images.append(Image.effect_noise((120, 90), 40).convert("RGB"))
    batch = naflex.encode_images(images, batch_size=3)
    single = np.concatenate([naflex.encode_images([im], batch_size=1) for im in images])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    worker = pickle.loads(pickle.dumps(naflex.preparer))  # what the batch workers receive
    np.testing.assert_array_equal(worker.preprocess(images[0]), naflex.preprocess(images[0]))


def test_naflex_hidden_features_average_the_real_patches_only(naflex) -> None:
    image = [Image.new("RGB", (300, 100), (200, 30, 30))]
    packed = naflex.preprocess(image[0])[None]
    _, mask, _ = unpack(packed)
    assert 0 < mask.sum() < mask.shape[1]  # padded: the mean must skip the padding rows
    padded_rows_changed = packed.copy()
    padded_rows_changed[0, 1 + int(mask.sum()) :] = 7.0
    a = naflex.encode_pixels(packed, representation="hidden:-1")
    b = naflex.encode_pixels(padded_rows_changed, representation="hidden:-1")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_naflex_collection_indexes_and_answers(
    naflex_dir: Path, tmp_path: Path, captioned_photos: list[Path], capsys
) -> None:
    photos = captioned_photos[:60]
    col = tmp_path / "col"
    code, out, err = run(
        capsys, "index", f"@{photo_list(tmp_path, photos)}", "-c", col, "--model", naflex_dir,
        "--precision", "fp32", "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["indexed"] == 60

    code, out, err = run(capsys, "search", "-c", col, "a photo of a dog", "-k", "5", "--json",
                         "--precision", "fp32")  # fmt: skip
    assert code == 0, err
    cli_ids = [row["id"] for row in json.loads(out)["results"]]
    encoder = load_encoder(naflex_dir, device="cpu", precision="fp32")
    with Collection.open(col) as collection:
        retriever = Retriever(encoder, collection)
        assert [h.id for h in retriever.search("a photo of a dog", k=5)] == cli_ids
        for photo in (photos[3], photos[41]):
            hit = retriever.search(image=photo, k=1)[0]
            assert Path(hit.record.path).samefile(photo)
            assert hit.score == pytest.approx(1.0, abs=1e-4)


@pytest.fixture(scope="module")
def multilingual_collection(tmp_path_factory: pytest.TempPathFactory, captioned_photos):
    """A Chinese-CLIP collection of 40 shared photos, built by ``xmodal index``."""
    root = tmp_path_factory.mktemp("multilingual")
    model = save_tiny("chinese_clip", root / "model", seed=0)
    col = root / "col"
    listing = photo_list(root, captioned_photos[:40])
    code = main(["index", f"@{listing}", "-c", str(col), "--model", str(model),
                 "--precision", "fp32", "--workers", "0"])  # fmt: skip
    assert code == 0
    return model, col


@pytest.mark.parametrize("query", QUERIES)
def test_multilingual_query_same_ids_in_cli_api_and_python(
    query: str, multilingual_collection, capsys
) -> None:
    from starlette.testclient import TestClient

    from xmodal.app import AppConfig
    from xmodal.app.server import create_app

    model, col = multilingual_collection
    code, out, err = run(capsys, "search", "-c", col, query, "-k", "8", "--json",
                         "--precision", "fp32")  # fmt: skip
    assert code == 0, err
    cli_ids = [row["id"] for row in json.loads(out)["results"]]
    assert len(cli_ids) == 8

    encoder = load_encoder(model, device="cpu", precision="fp32")
    with Collection.open(col) as collection:
        retriever = Retriever(encoder, collection)
        python_ids = [h.id for h in retriever.search(query, k=8)]
        with TestClient(create_app(retriever, config=AppConfig())) as client:
            response = client.post("/api/search", json={"text": query, "k": 8})
    assert response.status_code == 200, response.text
    api_ids = [row["id"] for row in response.json()["results"]]
    assert cli_ids == python_ids == api_ids


def test_naflex_embed_pooled_features(
    naflex_dir: Path, naflex, tmp_path: Path, captioned_photos: list[Path], capsys
) -> None:
    """``xmodal embed --representation pooled`` on a NaFlex model, through a decoding worker."""
    photos = captioned_photos[:12]
    code, _, err = run(
        capsys, "embed", f"@{photo_list(tmp_path, photos)}", "-o", tmp_path / "out",
        "--model", naflex_dir, "--precision", "fp32", "--representation", "pooled",
        "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = np.load(tmp_path / "out" / "image_embeddings.npy")
    expected = naflex.encode_images(photos, representation="pooled")
    np.testing.assert_allclose(rows, expected, atol=1e-4)

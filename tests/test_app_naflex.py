"""The HTTP API over a SigLIP 2 NaFlex collection: text and uploaded-image queries.

NaFlex images become patch sequences whose shape depends on each image's aspect ratio; an
uploaded image must go through the same decoding and packing as the indexed photos, so
``POST /api/search`` answers with the ids (and scores) ``Retriever.search`` gives in Python.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from app_helpers import b64, build_photo_collection
from PIL import Image

from xmodal.app import AppConfig
from xmodal.demo.tiny import save_tiny

K = 6


@pytest.fixture(scope="module")
def naflex_app(tmp_path_factory: pytest.TempPathFactory, captioned_photos: list[Path]):
    """A tiny NaFlex collection of 30 shared photos (fp32), and a test client on its app."""
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    root = tmp_path_factory.mktemp("naflex-app")
    model = save_tiny("siglip2-naflex", root / "model", seed=0)
    retriever = build_photo_collection(model, captioned_photos[:30], root / "col")
    assert retriever.encoder.spec.preprocessing["pipeline"] == "xmodal-exact"  # NaFlex packing
    with TestClient(create_app(retriever, config=AppConfig())) as client:
        yield client, retriever
    retriever.collection.close()


def api_hits(client, body: dict) -> list[tuple[int, float]]:
    response = client.post("/api/search", json={**body, "k": K})
    assert response.status_code == 200, response.text
    return [(row["id"], row["score"]) for row in response.json()["results"]]


def assert_same_hits(api: list[tuple[int, float]], python: list) -> None:
    assert [i for i, _ in api] == [h.id for h in python]
    assert [s for _, s in api] == pytest.approx([h.score for h in python], abs=1e-5)


@pytest.mark.parametrize("text", ["a photo of a dog", "一只猫坐在窗台上"])
def test_text_query_matches_the_retriever(naflex_app, text: str) -> None:
    client, retriever = naflex_app
    hits = api_hits(client, {"text": text})
    assert len(hits) == K
    assert_same_hits(hits, retriever.search(text, k=K))


def test_uploaded_photo_finds_itself_first(naflex_app, captioned_photos: list[Path]) -> None:
    client, retriever = naflex_app
    for photo in (captioned_photos[4], captioned_photos[17]):
        hits = api_hits(client, {"image": b64(photo.read_bytes())})
        expected = retriever.search(image=photo, k=K)
        assert_same_hits(hits, expected)
        assert Path(expected[0].record.path).samefile(photo)
        assert hits[0][1] == pytest.approx(1.0, abs=1e-4)


def test_uploaded_wide_image_matches_the_retriever(naflex_app) -> None:
    """An image outside the collection, 4:1, packed into a non-square patch grid."""
    client, retriever = naflex_app
    image = Image.effect_noise((320, 80), 60).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    hits = api_hits(client, {"image": b64(buffer.getvalue())})
    assert len(hits) == K
    assert_same_hits(hits, retriever.search(image=image, k=K))
    mixed = api_hits(client, {"image": b64(buffer.getvalue()), "text": "a photo of a dog"})
    assert_same_hits(mixed, retriever.search("a photo of a dog", image=image, k=K))

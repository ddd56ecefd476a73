"""The clip-retrieval routes over a real collection: embedding queries and /metadata."""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import build_photo_collection

from xmodal.app import AppConfig


@pytest.fixture(scope="module")
def real(tiny_clip_dir, captioned_photos, tmp_path_factory):
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    photos = captioned_photos[:6]
    target = tmp_path_factory.mktemp("clip-real") / "photos.xmodal"
    retriever = build_photo_collection(tiny_clip_dir, photos, target)
    app = create_app(retriever, config=AppConfig(max_k=50), index_name="photos")
    with TestClient(app) as client:
        yield client, retriever, photos
    retriever.collection.close()


def test_embedding_input_ranks_like_numpy(real):
    client, retriever, photos = real
    vectors = retriever.encoder.encode_images([str(p) for p in photos])
    query = vectors[2] + 0.3 * vectors[4]
    body = {"embedding_input": query.tolist(), "num_images": 6, "indice_name": "photos"}
    response = client.post("/knn-service", json=body)
    assert response.status_code == 200, response.text
    rows = response.json()
    by_path = {str(p.resolve()): i for i, p in enumerate(photos)}
    order = [by_path[row["path"]] for row in rows]
    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")
    assert order == expected.tolist()
    scores = vectors[order] @ (query / np.linalg.norm(query))
    assert [row["similarity"] for row in rows] == pytest.approx(scores.tolist(), abs=1e-4)


def test_metadata_describes_the_ids_knn_returned(real):
    client, _, photos = real
    rows = client.post(
        "/knn-service", json={"text": "a photo", "num_images": 0, "num_result_ids": 6}
    ).json()
    assert len(rows) == 6 and all(set(row) == {"id", "similarity"} for row in rows)
    ids = [row["id"] for row in rows]
    response = client.post("/metadata", json={"ids": [*ids[:3], 987654], "indice_name": "photos"})
    assert response.status_code == 200
    answered = response.json()
    assert [row["id"] for row in answered] == ids[:3]  # the unknown id is left out
    paths = {str(p.resolve()) for p in photos}
    for row in answered:
        meta = row["metadata"]
        assert meta["path"] in paths
        assert meta["url"] == f"http://testserver/api/image/{row['id']}"
        image = client.get(meta["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"

"""The JSON API and the clip-retrieval protocol, through FastAPI's test client (no socket)."""

from __future__ import annotations

import io

import pytest
from app_helpers import COLOURS, RECORDS, FakeRetriever, b64, install_fake_load_image, png_bytes
from PIL import Image

from xmodal.app import AppConfig


@pytest.fixture(scope="module")
def app_and_retriever():
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    retriever = FakeRetriever()
    app = create_app(retriever, config=AppConfig(max_k=50), index_name="photos")
    with TestClient(app) as client:
        yield client, retriever


@pytest.fixture
def client(app_and_retriever, monkeypatch):
    client, retriever = app_and_retriever
    retriever.calls.clear()
    retriever.thumb_calls.clear()
    retriever.explode = False
    install_fake_load_image(monkeypatch)
    return client


@pytest.fixture
def retriever(app_and_retriever) -> FakeRetriever:
    return app_and_retriever[1]


def test_text_search_returns_rows_with_image_urls(client, retriever):
    response = client.post("/api/search", json={"text": "red", "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "took_ms", "k", "message"} and body["took_ms"] >= 0
    assert body["k"] == {"requested": 2, "used": 2} and body["message"] is None
    assert body["results"] == [
        {
            "id": 10,
            "score": 0.9,
            "path": RECORDS[0].path,
            "caption": "a red square",
            "image_url": "http://testserver/api/image/10",
            "tags": [],
        },
        {
            "id": 11,
            "score": 0.7,
            "path": RECORDS[1].path,
            "caption": RECORDS[1].caption,
            "image_url": "http://testserver/api/image/11",
            "tags": [],
        },
    ]
    assert retriever.calls[0]["text"] == "red" and retriever.calls[0]["k"] == 2
    assert retriever.thumb_calls == []  # the API does not render thumbnails it does not return


def test_all_query_fields_reach_the_retriever(client, retriever):
    body = {
        "text": "beach",
        "image": b64(png_bytes()),
        "negative": "people",
        "image_weight": 0.3,
        "k": 500,
        "threshold": 0.6,
        "where": "ext:jpg",
    }
    response = client.post("/api/search", json=body)
    assert response.status_code == 200 and len(response.json()["results"]) == 2
    assert response.json()["k"] == {"requested": 500, "used": 50}
    assert response.json()["message"] == "Showing at most 50 results (asked for 500)."
    call = retriever.calls[0]
    assert isinstance(call["image"], Image.Image)
    assert (call["negative"], call["image_weight"], call["k"], call["threshold"]) == (
        "people",
        0.3,
        50,
        0.6,
    )
    assert call["where"] == "ext:jpg"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"text": "  "}, 400, "Type a description or upload an image to search."),
        ({"text": "a", "image_weight": 2}, 400, "The image weight must be a number from 0"),
        ({"image": "!!!"}, 400, "The image is not valid base64"),
        ({"image": b64(b"not an image")}, 400, "this is not an image [not-an-image]"),
    ],
)
def test_bad_queries_are_400_with_the_page_wording(client, retriever, body, status, detail):
    response = client.post("/api/search", json=body)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail) or detail in response.json()["detail"]
    assert retriever.calls == []


def test_unknown_fields_are_refused_by_the_schema(client):
    response = client.post("/api/search", json={"text": "a", "image_url": "http://x/y.jpg"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image_url"]


def test_internal_errors_are_500_without_details(client, retriever):
    retriever.explode = True
    response = client.post("/api/search", json={"text": "red"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Search failed because of an internal error; the server log has the details."
    }


def test_image_route_serves_a_jpeg_by_catalog_id(client, retriever):
    response = client.get("/api/image/11", params={"size": 64})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "JPEG" and image.size == (48, 32)
        pixel = image.convert("RGB").getpixel((20, 20))
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, COLOURS[1], strict=True))
    assert retriever.thumb_calls == [(11, 64)]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/image/999", 404), ("/api/image/10?size=5000", 422), ("/api/image/-1", 404)],
)
def test_image_route_refuses_unknown_ids_and_huge_sizes(client, path, status):
    assert client.get(path).status_code == status


def test_info_and_health(client):
    info = client.get("/api/info").json()
    assert info["model"] == "tiny-clip" and info["count"] == 3 and info["max_k"] == 50
    assert client.get("/api/health").json() == {"status": "ok", "queries_in_flight": 0}


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/api/search", "/api/image/{item_id}", "/api/info", "/api/health"):
        assert route in paths
    for route in ("/knn-service", "/metadata", "/indices-list"):
        assert route in paths
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchBody"]
    assert set(schema["properties"]) == {
        "text",
        "image",
        "negative",
        "image_weight",
        "k",
        "threshold",
        "where",
        "mode",
        "keyword_weight",
    }
    assert client.get("/docs").status_code == 200


# --- clip-retrieval protocol --------------------------------------------------------------------


def test_indices_list_names_the_collection(client):
    assert client.get("/indices-list").json() == ["photos"]


def test_knn_service_answers_like_clip_back(client, retriever):
    body = {
        "text": "red",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "modality": "image",
        "num_images": 1,
        "num_result_ids": 2,
        "indice_name": "photos",
        "use_mclip": False,
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "aesthetic_score": "",
        "aesthetic_weight": "",
    }
    response = client.post("/knn-service", json=body)
    assert response.status_code == 200
    assert response.json() == [
        {
            "url": "http://testserver/api/image/10",
            "caption": "a red square",
            "path": RECORDS[0].path,
            "id": 10,
            "similarity": pytest.approx(0.9),
        },
        {"id": 11, "similarity": pytest.approx(0.7)},
    ]
    assert retriever.calls[0]["k"] == 2


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"image_url": "http://example.com/cat.jpg"}, "This server does not fetch URLs"),
        ({"modality": "text"}, "This server has an image index only"),
        ({"indice_name": "laion5B"}, "Unknown index 'laion5B'"),
        ({"text": None}, "must fill one of text, image and embedding_input"),
    ],
)
def test_knn_service_refusals(client, retriever, change, detail):
    body = {"text": "red", "modality": "image", "num_images": 3, "indice_name": "photos"}
    response = client.post("/knn-service", json={**body, **change})
    assert response.status_code == 400 and response.json()["detail"].startswith(detail)
    assert retriever.calls == []


def test_knn_service_by_image(client, retriever):
    body = {"image": b64(png_bytes()), "modality": "image", "num_images": 3, "indice_name": None}
    response = client.post("/knn-service", json=body)
    assert response.status_code == 200 and [row["id"] for row in response.json()] == [10, 11, 12]
    assert retriever.calls[0]["text"] is None and retriever.calls[0]["image"] is not None


def test_knn_service_embedding_needs_a_collection(client):
    body = {"embedding_input": [0.1] * 16, "modality": "image", "num_images": 3}
    response = client.post("/knn-service", json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == "Searching by embedding is not available on this server."


def test_metadata_of_ids_without_a_collection_is_empty(client):
    response = client.post("/metadata", json={"ids": [10, 11], "indice_name": "photos"})
    assert response.status_code == 200 and response.json() == []
    response = client.post("/metadata", json={"ids": list(range(51)), "indice_name": "photos"})
    assert response.status_code == 400
    assert response.json()["detail"] == "Ask for at most 50 ids at a time."


def test_knn_service_takes_clip_clients_exact_request(client, retriever):
    """ClipClient posts json.dumps(...) with no Content-Type and these keys and defaults."""
    import json

    payload = {
        "text": "red",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "indice_name": "photos",
        "use_mclip": False,
        "aesthetic_score": 9,
        "aesthetic_weight": 0.5,
        "modality": "image",
        "num_images": 40,
        "num_result_ids": 40,
        "verbose": False,
    }
    response = client.post("/knn-service", content=json.dumps(payload))
    assert response.status_code == 200
    rows = response.json()
    assert [row["id"] for row in rows] == [10, 11, 12]
    assert set(rows[0]) == {"id", "similarity", "url", "caption", "path"}
    assert retriever.calls[0]["k"] == 40


K_RULE = "k (the number of results) must be a whole number of at least 1, got "


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/api/search", b'{"text": "red", "k": 0}', K_RULE + "0"),
        ("/api/search", b'{"text": "red", "k": -2}', K_RULE + "-2"),
        ("/api/search", b'{"text": "red", "k": 1e400}', K_RULE + "inf"),
        ("/knn-service", b'{"text": "red", "num_images": 0}', K_RULE + "0"),
        ("/knn-service", b'{"text": "red", "num_result_ids": 1e400}', K_RULE + "inf"),
        (
            "/api/search",
            b'{"text": "red", "threshold": -1e400}',
            "The minimum score must be a finite",
        ),
        ("/api/search", b'{"text": "dog \\ud800 cat"}', "The description is not valid Unicode"),
        ("/api/search", b'{"text": "a", "negative": "\\udcff"}', "The negative text is not valid"),
        ("/knn-service", b'{"text": "dog \\ud800 cat"}', "The description is not valid Unicode"),
    ],
)
def test_k_and_text_that_json_allows_but_a_query_cannot_use_are_400(
    client, retriever, path, body, detail
):
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail)
    assert retriever.calls == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"text": "red", "num_images": 1e400}', ["body", "num_images"]),
        (b'{"text": "red", "\\ud800": 1}', ["body"]),
    ],
)
def test_unwritable_values_in_a_malformed_body_still_get_a_json_422(client, body, loc):
    headers = {"Content-Type": "application/json"}
    response = client.post("/api/search", content=body, headers=headers)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]


def test_knn_service_says_in_a_header_when_it_lowered_k(client, retriever):
    response = client.post("/knn-service", json={"text": "red", "num_images": 500})
    assert response.status_code == 200 and [row["id"] for row in response.json()] == [10, 11, 12]
    assert response.headers["x-xmodal-notice"] == "Showing at most 50 results (asked for 500)."
    assert retriever.calls[0]["k"] == 50
    plain = client.post("/knn-service", json={"text": "red", "num_images": 5})
    assert "x-xmodal-notice" not in plain.headers

"""A live server on a free local port: gradio_client, plain HTTP, and concurrent clients."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from app_helpers import (
    COLOURS,
    TOKEN,
    FakeRetriever,
    block_internet,
    build_photo_collection,
    free_port,
    install_fake_load_image,
)
from PIL import Image

from xmodal.app import AppConfig


def post_json(url: str, body: dict, token: str | None = None, timeout: float = 30) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_network_guard_blocks_outside_hosts(monkeypatch):
    import socket

    attempts = block_internet(monkeypatch)
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(OSError), socket.socket() as sock:
        sock.connect(("192.0.2.1", 80))
    assert attempts == ["getaddrinfo example.com", "connect ('192.0.2.1', 80)"]


def test_live_round_trip_with_gradio_client_and_token(monkeypatch, tmp_path):
    from gradio_client import Client, handle_file

    from xmodal.app import launch

    attempts = block_internet(monkeypatch)
    uploads = install_fake_load_image(monkeypatch)
    retriever = FakeRetriever()
    server = launch(retriever, port=free_port(), block=False, config=AppConfig(auth_token=TOKEN))
    try:
        assert server.host == "127.0.0.1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "api/health", timeout=10)
        assert refused.value.code == 401
        client = Client(
            server.url,
            verbose=False,
            download_files=str(tmp_path),
            analytics_enabled=False,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            gallery, status = client.predict(
                "a red thing", None, 2, "", "", 0.5, "", api_name="/search"
            )
            assert status == r"2 results\."
            assert [item["caption"] for item in gallery] == [
                "0.900 · IMG_0001.jpg · a red square",
                "0.700 · beach_day.png · green field at noon",
            ]
            with Image.open(gallery[0]["image"]) as first:
                assert first.size == (48, 32)
                pixel = first.convert("RGB").getpixel((5, 5))
                # Gallery images travel as lossy WebP: close to the thumbnail, not identical.
                assert all(abs(a - b) <= 4 for a, b in zip(pixel, COLOURS[0], strict=True))

            gallery, status = client.predict("   ", None, 5, "", "", 0.5, "", api_name="/search")
            assert gallery == []
            assert status == r"**Error:** Type a description or upload an image to search\."

            query = tmp_path / "query.png"
            Image.new("RGB", (20, 10), (9, 9, 9)).save(query)
            gallery, status = client.predict(
                "", handle_file(str(query)), 24, "0.6", "dogs", 0.8, "ext:jpg", api_name="/search"
            )
            assert status == r"2 results\." and len(gallery) == 2
            # The handler got Gradio's copy of the upload, not the client's path, and decoded it
            # itself with the app's pixel cap.
            [(uploaded, max_pixels)] = uploads
            assert uploaded != str(query) and uploaded.endswith(".png")
            assert max_pixels == AppConfig().max_upload_pixels
        finally:
            client.close()
        rows = post_json(server.url + "api/search", {"text": "red", "k": 1}, TOKEN)["results"]
        assert rows[0]["image_url"] == server.url + "api/image/10"
    finally:
        server.close()
    assert attempts == []
    assert [(c["text"], c["k"], c["threshold"], c["negative"]) for c in retriever.calls] == [
        ("a red thing", 2, None, None),
        (None, 24, 0.6, "dogs"),
        ("red", 1, None, None),
    ]


@pytest.fixture(scope="module")
def photo_server(tiny_clip_dir, captioned_photos, tmp_path_factory):
    """A real tiny-CLIP collection of 24 shared photos, served on a free local port."""
    from xmodal.app import launch

    target = tmp_path_factory.mktemp("live") / "photos"
    retriever = build_photo_collection(tiny_clip_dir, captioned_photos[:24], target)
    server = launch(retriever, port=free_port(), block=False, config=AppConfig(queue_max_size=64))
    yield server, retriever
    server.close()
    retriever.collection.close()


def test_twenty_clients_ten_queries_each_without_errors(photo_server, monkeypatch):
    server, retriever = photo_server
    attempts = block_internet(monkeypatch)
    words = ["dog", "beach", "a red car", "mountains at dusk", "people", "food", "city", "tree"]
    errors: list[str] = []
    counts = [0] * 20
    expected = {w: [h.id for h in retriever.search(w, k=5)] for w in words}

    def client(n: int) -> None:
        for i in range(10):
            text = words[(n + i) % len(words)]
            try:
                rows = post_json(server.url + "api/search", {"text": text, "k": 5})["results"]
                if [row["id"] for row in rows] != expected[text]:
                    errors.append(f"client {n}: wrong results for {text!r}")
                counts[n] += 1
            except Exception as exc:  # every failure is counted, none is swallowed
                errors.append(f"client {n}: {exc!r}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"
    assert errors == []
    assert sum(counts) == 200 and elapsed < 120
    assert attempts == []


def test_overload_is_refused_fast_with_503():
    """Two slots (one running, one waiting): a third concurrent query is refused at once."""
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    gate = threading.Event()
    retriever = FakeRetriever()
    real_search = retriever.search_result

    def slow_search(*args, **kwargs):
        gate.wait(20)
        return real_search(*args, **kwargs)

    retriever.search_result = slow_search  # type: ignore[method-assign]
    config = AppConfig(concurrency_limit=1, queue_max_size=1)
    results: list[int] = []
    with TestClient(create_app(retriever, config=config)) as http:

        def ask() -> None:
            results.append(http.post("/api/search", json={"text": "red"}).status_code)

        waiting = [threading.Thread(target=ask) for _ in range(2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while http.get("/api/health").json()["queries_in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.perf_counter()
        refused = http.post("/api/search", json={"text": "red"})
        refused_in = time.perf_counter() - started
        gate.set()
        for thread in waiting:
            thread.join(20)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"].startswith("The server is busy (2 queries running or waiting)")
    assert refused_in < 2.0
    assert sorted(results) == [200, 200]

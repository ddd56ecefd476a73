"""Safe to run on a network: token on every route, files by catalog id only, capped uploads."""

from __future__ import annotations

import pytest
from app_helpers import TOKEN, FakeRetriever, b64, png_bytes

from xmodal.app import AppConfig
from xmodal.app.security import COOKIE_NAME, tokens_match

SECRET_TEXT = "top secret contents 7f3a"

# Every kind of route the server has: ours, clip-retrieval's, Gradio's page, config, queue,
# upload and file routes, and the API docs.
ROUTES = [
    ("GET", "/"),
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("POST", "/gradio_api/queue/join"),
    ("POST", "/gradio_api/upload"),
    ("GET", "/gradio_api/file=/etc/hostname"),
    ("GET", "/api/health"),
    ("GET", "/api/info"),
    ("POST", "/api/search"),
    ("GET", "/api/image/10"),
    ("GET", "/indices-list"),
    ("POST", "/knn-service"),
    ("POST", "/metadata"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]


@pytest.fixture(scope="module")
def secured():
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    config = AppConfig(auth_token=TOKEN, max_upload_bytes=2000, max_upload_pixels=10_000)
    with TestClient(create_app(FakeRetriever(), config=config)) as client:
        yield client


@pytest.fixture(scope="module")
def open_app():
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    config = AppConfig(max_upload_bytes=2000, max_upload_pixels=10_000)
    with TestClient(create_app(FakeRetriever(), config=config)) as client:
        yield client


def test_tokens_compare_exactly():
    assert tokens_match(TOKEN, TOKEN)
    assert not tokens_match(TOKEN[:-1], TOKEN) and not tokens_match(None, TOKEN)
    assert not tokens_match(TOKEN + "x", TOKEN) and not tokens_match("", TOKEN)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_the_token(secured, method, path):
    secured.cookies.clear()
    response = secured.request(method, path, headers={"Authorization": "Bearer wrong-token!"})
    assert response.status_code == 401, path
    assert response.json()["detail"].startswith("This server needs an access token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert secured.request(method, path).status_code == 401


@pytest.mark.parametrize(
    "path", ["/", "/config", "/api/health", "/api/image/10", "/indices-list", "/openapi.json"]
)
def test_bearer_token_opens_every_route(secured, path):
    secured.cookies.clear()
    response = secured.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, path


def test_token_in_the_address_becomes_an_httponly_cookie(secured):
    secured.cookies.clear()
    response = secured.get(f"/?token={TOKEN}&x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/?x=1"  # the token leaves the address bar
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert secured.get("/api/health").status_code == 200  # the cookie now opens the API
    secured.cookies.clear()
    assert secured.get("/?token=wrong-token!", follow_redirects=False).status_code == 401


def test_search_with_the_token_works(secured):
    secured.cookies.clear()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = secured.post("/api/search", json={"text": "red", "k": 1}, headers=headers)
    assert response.status_code == 200 and response.json()["results"][0]["id"] == 10


TRAVERSALS = [
    "/gradio_api/file={secret}",
    "/gradio_api/file=../../../../../../..{secret}",
    "/gradio_api/file=%2F..%2F..%2F..{secret}",
    "/file={secret}",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/gradio_api/static/..%2f..%2f..%2fetc%2fpasswd",
    "/api/image/..%2f..%2fetc%2fpasswd",
    "/api/image/%2e%2e",
    "/api/image/1%2f..%2f..%2fetc%2fpasswd",
    "/api/image/10?path={secret}",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_no_route_serves_a_file_outside_the_collection(open_app, tmp_path, template):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    response = open_app.get(template.format(secret=secret))
    assert SECRET_TEXT not in response.text
    assert "root:" not in response.text
    if "api/image/10" not in template:
        assert response.status_code in (400, 403, 404, 405, 422), response.status_code


def test_gradio_does_not_serve_collection_files_it_was_not_given(open_app, tmp_path):
    photo = tmp_path / "indexed.png"
    photo.write_bytes(png_bytes())
    for path in (f"/gradio_api/file={photo}", f"/file={photo}"):
        response = open_app.get(path)
        assert response.status_code in (403, 404)
        assert response.content != photo.read_bytes()


def test_oversized_bodies_are_refused_before_reading(open_app):
    big = b64(png_bytes()) + "A" * 5000
    response = open_app.post("/api/search", json={"image": big})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The image has ")
    # Past the server-wide cap, the body is refused by its declared length before any route.
    huge = b"x" * (2000 * 4 // 3 + (1 << 20) + 10)
    response = open_app.post(
        "/api/search", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The request body is larger than")


def test_streamed_bodies_are_cut_off_at_the_cap(open_app):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    response = open_app.post(
        "/api/search", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_gradio_uploads_are_capped(open_app):
    response = open_app.post(
        "/gradio_api/upload", files={"files": ("big.png", b"x" * 5000, "image/png")}
    )
    assert response.status_code == 413


def test_query_images_are_pixel_capped_by_the_indexing_decoder(open_app):
    bomb = png_bytes(size=(200, 200))  # 40,000 pixels against a 10,000 cap; a few hundred bytes
    response = open_app.post("/api/search", json={"image": b64(bomb)})
    assert response.status_code == 400
    assert "[decompression-bomb]" in response.json()["detail"]


def test_knn_service_never_fetches_urls(open_app, monkeypatch):
    from app_helpers import block_internet

    attempts = block_internet(monkeypatch)
    body = {"image_url": "http://192.0.2.1/cat.jpg", "modality": "image", "num_images": 2}
    response = open_app.post("/knn-service", json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("This server does not fetch URLs")
    assert attempts == []


def test_serve_command_takes_token_and_upload_cap_from_flags_or_env(monkeypatch, tmp_path, capsys):
    import xmodal.app
    import xmodal.cli.commands as commands
    from xmodal.cli import main

    seen: dict = {}
    monkeypatch.setattr(commands, "_retriever", lambda args: "retriever")
    monkeypatch.setattr(xmodal.app, "serve", lambda retriever, **kw: seen.update(kw), raising=False)
    collection = tmp_path / "holiday.xmodal"
    monkeypatch.setenv("XMODAL_AUTH_TOKEN", TOKEN)
    assert main(["serve", "-c", str(collection), "--max-upload-mb", "0.5"]) == 0
    config = seen["config"]
    assert config.auth_token == TOKEN and config.max_upload_bytes == 512 * 1024
    assert seen["host"] == "127.0.0.1" and seen["index_name"] == "holiday.xmodal"
    out = capsys.readouterr().out
    assert "?token=YOUR_TOKEN" in out and TOKEN not in out

    monkeypatch.delenv("XMODAL_AUTH_TOKEN")
    assert main(["serve", "-c", str(collection), "--cors-origin", "https://a.example"]) == 0
    assert seen["config"].auth_token is None
    assert seen["config"].cors_origins == ("https://a.example",)
    assert main(["serve", "-c", str(collection), "--auth-token", "short"]) == 1
    assert capsys.readouterr().err.strip() == (
        "xmodal: error: serve: auth_token must have at least 8 characters"
    )


def test_websockets_without_the_token_are_closed(secured):
    from starlette.websockets import WebSocketDisconnect

    secured.cookies.clear()
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        secured.websocket_connect("/gradio_api/queue/join"),
    ):
        pass
    assert closed.value.code == 1008


ORIGIN = "https://front.example"


@pytest.fixture(scope="module")
def cors_secured():
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    config = AppConfig(auth_token=TOKEN, cors_origins=(ORIGIN,))
    with TestClient(create_app(FakeRetriever(), config=config)) as client:
        yield client


@pytest.mark.parametrize("path", ["/api/search", "/knn-service"])
def test_a_browser_preflight_passes_the_token_guard(cors_secured, path):
    cors_secured.cookies.clear()
    preflight = cors_secured.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_cross_origin_requests_still_need_the_token(cors_secured):
    cors_secured.cookies.clear()
    body = {"text": "red", "k": 1}
    refused = cors_secured.post("/api/search", json=body, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read the 401
    headers = {"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"}
    allowed = cors_secured.post("/api/search", json=body, headers=headers)
    assert allowed.status_code == 200 and allowed.json()["results"][0]["id"] == 10
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


def test_other_origins_get_no_cors_headers(cors_secured):
    preflight = cors_secured.options(
        "/api/search",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers

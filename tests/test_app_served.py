"""A real ``xmodal serve`` refuses files a client names by path or URL, and stays responsive.

Gradio copies whatever a ``FileData`` path names into its cache and serves the copy. These tests
post such payloads to Gradio's own routes on a live server (a child process, with and without a
token) and check that nothing outside the uploads is read, that the server still answers and
stops, and that a real upload through ``/gradio_api/upload`` still searches.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from app_helpers import TOKEN, ServeProcess, index_folder, photo_folder

FILE_META = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def collection(tiny_clip_dir, captioned_photos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    folder = photo_folder(captioned_photos[:4], root / "photos")
    return index_folder(tiny_clip_dir, folder, root / "photos.xmodal")


@pytest.fixture(scope="module", params=["open", "token"])
def server(request, collection, tmp_path_factory):
    cache = tmp_path_factory.mktemp("gradio-cache")
    process = ServeProcess(collection, cache, token=TOKEN if request.param == "token" else None)
    yield process
    process.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        yield client


def image_events(http: httpx.Client) -> list[tuple[int, int, int]]:
    """(fn_index, number of inputs, position of the image input) of every event taking it."""
    config = http.get("/config").json()
    image_ids = {
        c["id"]
        for c in config["components"]
        if c["type"] == "image" and c["props"].get("interactive") is not False
    }
    events = []
    for fn_index, dep in enumerate(config["dependencies"]):
        inputs = dep["inputs"]
        events += [
            (dep.get("id", fn_index), len(inputs), inputs.index(i))
            for i in image_ids
            if i in inputs
        ]
    return events


# The page's search inputs: text, image, k, threshold, negative, image weight, where, mode.
SEARCH_DEFAULTS = ["", None, 3, "", "", 0.5, "", "vector"]
N_SEARCH = len(SEARCH_DEFAULTS)


def search_inputs(file: dict | None, n: int = N_SEARCH, at: int = 1) -> list:
    data = SEARCH_DEFAULTS[:n] + [None] * max(0, n - N_SEARCH)
    data[at] = file
    return data


def join(http: httpx.Client, fn_index: int, data: list) -> tuple[httpx.Response, str]:
    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None}
    return http.post("/gradio_api/queue/join", json=body), session


def outcome(http: httpx.Client, session: str, timeout: float = 60) -> dict:
    """The ``process_completed`` message of a queued event (bounded wait)."""
    deadline = time.monotonic() + timeout
    with http.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
            assert time.monotonic() < deadline, "no process_completed within the deadline"
    raise AssertionError("the event stream ended before the event completed")


def cached_copies(cache: Path, target: Path) -> list[Path]:
    content = target.read_bytes()
    files = [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]
    return [p for p in files if p.read_bytes() == content]


def assert_responsive(server: ServeProcess, within: float = 5.0) -> None:
    started = time.monotonic()
    response = httpx.get(f"{server.url}/api/health", headers=server.headers, timeout=within)
    assert response.status_code == 200 and time.monotonic() - started < within


def refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {
        "detail": "This server only accepts images uploaded through the page; "
        "upload the image again."
    }


def attacks(tmp: Path, outside_image: Path, cache: Path) -> dict[str, dict]:
    fifo = tmp / "query.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    link = cache / "link.png"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    svg = tmp / "secret.svg"
    svg.write_text("<svg xmlns='http://www.w3.org/2000/svg'><!-- secret 81f2 --></svg>")
    return {
        "passwd": {"path": "/etc/passwd", "meta": FILE_META},
        "outside image": {"path": str(outside_image), "meta": FILE_META, "orig_name": "a.jpg"},
        "dev zero": {"path": "/dev/zero", "meta": FILE_META},
        "fifo": {"path": str(fifo), "meta": FILE_META},
        "url as path": {"path": "http://127.0.0.1:9/cat.png", "meta": FILE_META},
        "symlink in cache": {"path": str(link), "meta": FILE_META},
        "svg": {"path": str(svg), "meta": FILE_META},
        "relative": {"path": "../../../../../../etc/passwd", "meta": FILE_META},
        "no meta": {"path": "/etc/passwd"},
    }


def test_file_paths_from_the_client_are_refused_on_every_image_event(
    server, http, tmp_path, captioned_photos
):
    events = image_events(http)
    assert len(events) >= 2  # the search and the one "More like this" chains into
    outside = captioned_photos[10]
    for file in attacks(tmp_path, outside, server.cache).values():
        for fn_index, n, at in events:
            response, _ = join(http, fn_index, search_inputs(file, n, at))
            refused(response)
        for route in ("/gradio_api/run/search", "/gradio_api/call/search"):
            refused(http.post(route, json={"data": search_inputs(file)}))
        assert_responsive(server)
    for target in (Path("/etc/passwd"), outside):
        assert cached_copies(server.cache, target) == []
    served = http.get(f"/gradio_api/file={tmp_path / 'secret.svg'}")
    assert "secret 81f2" not in served.text


def test_a_url_beside_an_uploaded_file_is_refused(server, http, captioned_photos):
    [path] = upload(http, captioned_photos[0])
    (fn_index, n, at), *_ = image_events(http)
    for url in ("http://192.0.2.1/cat.png", "file:///etc/passwd", "/gradio_api/file=/etc/passwd"):
        file = {"path": path, "url": url, "meta": FILE_META}
        refused(join(http, fn_index, search_inputs(file, n, at))[0])


def upload(http: httpx.Client, photo: Path) -> list[str]:
    files = {"files": (photo.name, photo.read_bytes(), "image/jpeg")}
    response = http.post("/gradio_api/upload", files=files)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_uploaded_image_still_searches(server, http, captioned_photos):
    [path] = upload(http, captioned_photos[1])
    assert Path(path).resolve().is_relative_to(server.cache.resolve())
    # As the page sends it: the path Gradio returned and its /file= address on this server.
    url = f"{server.url}/gradio_api/file={path}"
    file = {"path": path, "url": url, "orig_name": "q.jpg", "meta": FILE_META}
    fn_index = next(i for i, n, at in image_events(http) if n == N_SEARCH)
    response, session = join(http, fn_index, search_inputs(file))
    assert response.status_code == 200, response.text
    message = outcome(http, session)
    assert message["success"] is True, message
    gallery, status, _ = message["output"]["data"]
    assert status == "3 results\\." and len(gallery) == 3


def page_search(http: httpx.Client, text: str, k=5, threshold="", where="") -> tuple[list, str]:
    """The page's search event through Gradio's queue: (gallery, status line)."""
    fn_index = next(i for i, n, _ in image_events(http) if n == N_SEARCH)
    response, session = join(http, fn_index, [text, None, k, threshold, "", 0.5, where, "vector"])
    assert response.status_code == 200, response.text
    message = outcome(http, session)
    assert message["success"] is True, message
    gallery, status, _ = message["output"]["data"]
    return gallery, status


def post_raw(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


SHOWN_NAME = "caf\\xe9-\\xff.png"  # how b"caf\xe9-\xff.png" reads in JSON and captions


def test_a_non_utf8_file_name_in_the_results(server, http):
    rows = http.post("/api/search", json={"text": "a photo", "k": 5}).json()["results"]
    assert len(rows) == 5
    [odd] = [row for row in rows if row["path"].endswith(SHOWN_NAME)]
    assert odd["path"] == str(Path(odd["path"]).parent / SHOWN_NAME)
    image = http.get(f"/api/image/{odd['id']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    knn = http.post("/knn-service", json={"text": "a photo", "num_images": 5})
    assert knn.status_code == 200
    assert [row["path"] for row in knn.json() if row["id"] == odd["id"]] == [odd["path"]]
    gallery, status = page_search(http, "a photo", k=5)
    assert status == "5 results\\."
    assert sum(f" · {SHOWN_NAME}" in item["caption"] for item in gallery) == 1, gallery


K_RULE = "k (the number of results) must be a whole number of at least 1, got "


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/api/search", rb'{"text": "dog \ud800 cat"}', "The description is not valid Unicode"),
        ("/knn-service", rb'{"text": "dog \ud800 cat"}', "The description is not valid Unicode"),
        ("/api/search", b'{"text": "dog", "k": 1e400}', K_RULE + "inf"),
        ("/knn-service", b'{"text": "dog", "num_images": 1e400}', K_RULE + "inf"),
        ("/api/search", b'{"text": "dog", "k": 0}', K_RULE + "0"),
        ("/knn-service", b'{"text": "dog", "num_result_ids": 0}', K_RULE + "0"),
    ],
)
def test_values_json_allows_but_a_query_cannot_use_are_400(server, http, path, body, detail):
    response = post_raw(http, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail)


def test_k_over_the_maximum_is_lowered_and_said(server, http):
    body = http.post("/api/search", json={"text": "dog", "k": 1000}).json()
    assert body["k"] == {"requested": 1000, "used": 100} and len(body["results"]) == 5
    assert body["message"] == "Showing at most 100 results (asked for 1000)."
    knn = http.post("/knn-service", json={"text": "dog", "num_images": 1000})
    assert len(knn.json()) == 5
    assert knn.headers["x-xmodal-notice"] == "Showing at most 100 results (asked for 1000)."


def test_no_results_says_why_on_the_api_and_the_page(server, http):
    from xmodal.app.ui import escape_markdown

    best = http.post("/api/search", json={"text": "dog", "k": 1}).json()["results"][0]["score"]
    high = round(best + 0.01, 2)
    expected = f"No results scored {high:g} or more (best score {best:.3f})."
    body = http.post("/api/search", json={"text": "dog", "threshold": high}).json()
    assert (body["results"], body["message"]) == ([], expected)
    assert page_search(http, "dog", threshold=str(high)) == ([], escape_markdown(expected))
    nothing = "No item matches the filter 'ext:gif'."
    body = http.post("/api/search", json={"text": "dog", "where": "ext:gif"}).json()
    assert (body["results"], body["message"]) == ([], nothing)
    assert page_search(http, "dog", where="ext:gif") == ([], escape_markdown(nothing))


def test_the_search_command_says_why_there_are_no_results(collection, capsys):
    from xmodal.cli import main

    common = ["search", "dog", "-c", str(collection), "--precision", "fp32"]
    assert main([*common, "-k", "1", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["results"][0]["score"]
    high = round(best + 0.01, 2)
    assert main([*common, "--threshold", str(high)]) == 0
    assert (
        capsys.readouterr().out == f"No results scored {high:g} or more (best score {best:.3f}).\n"
    )
    assert main([*common, "--where", "ext:gif"]) == 0
    assert capsys.readouterr().out == "No item matches the filter 'ext:gif'.\n"
    assert main([*common, "-k", "0"]) == 1
    assert capsys.readouterr().err == f"xmodal: error: {K_RULE}0\n"
    assert main([*common, "-k", "5"]) == 0
    assert sum(SHOWN_NAME in line for line in capsys.readouterr().out.splitlines()) == 1


def test_the_server_stops_on_a_signal(server):
    """Ctrl-C (SIGINT) on the open server, SIGTERM on the other; both after the attacks."""
    interrupt = server.token is None
    code, out, err = server.stop(signal.SIGINT if interrupt else signal.SIGTERM)
    # uvicorn shuts down, then re-raises the signal: Ctrl-C ends as 130, SIGTERM as killed by it.
    assert code == (130 if interrupt else -signal.SIGTERM), (code, err)
    if interrupt:
        assert err.strip().splitlines()[-1] == "xmodal: server stopped"
        assert "committed work" not in err


def test_an_eps_query_never_reaches_ghostscript_on_a_live_server(
    collection, tmp_path, tmp_path_factory, monkeypatch
):
    """An EPS named .png, as an API query and as a page upload, on a server with `gs` on PATH."""
    import base64

    from test_images_policy import EPS, fake_ghostscript

    bin_dir = fake_ghostscript(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    server = ServeProcess(collection, tmp_path_factory.mktemp("gradio-cache-gs"))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            query = {"image": base64.b64encode(EPS).decode("ascii"), "k": 3}
            response = http.post("/api/search", json=query)
            assert response.status_code == 400, response.text
            assert "PostScript/EPS is not decoded" in response.json()["detail"]
            files = {"files": ("query.png", EPS, "image/png")}
            uploaded = http.post("/gradio_api/upload", files=files)
            if uploaded.status_code == 200:  # Gradio may refuse the file itself: also fine
                [path] = uploaded.json()
                file = {"path": path, "orig_name": "query.png", "meta": FILE_META}
                fn_index = next(i for i, n, _ in image_events(http) if n == N_SEARCH)
                joined, session = join(http, fn_index, search_inputs(file))
                if joined.status_code == 200:
                    message = outcome(http, session)
                    assert "3 results" not in json.dumps(message)
            assert_responsive(server)
    finally:
        server.close()
    assert not (tmp_path / "gs-called").exists(), (tmp_path / "gs-called").read_text()

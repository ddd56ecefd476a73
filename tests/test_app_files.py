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

pytestmark = pytest.mark.slow

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


def search_inputs(file: dict | None, n: int = 7, at: int = 1) -> list:
    data = ["", None, 3, "", "", 0.5, ""][:n] + [None] * max(0, n - 7)
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
    fn_index = next(i for i, n, at in image_events(http) if n == 7)
    response, session = join(http, fn_index, search_inputs(file))
    assert response.status_code == 200, response.text
    message = outcome(http, session)
    assert message["success"] is True, message
    gallery, status, _ = message["output"]["data"]
    assert status == "3 results\\." and len(gallery) == 3


def test_the_server_stops_on_a_signal(server):
    """Ctrl-C (SIGINT) on the open server, SIGTERM on the other; both after the attacks."""
    interrupt = server.token is None
    code, out, err = server.stop(signal.SIGINT if interrupt else signal.SIGTERM)
    if interrupt:
        assert err.strip().splitlines()[-1] == "xmodal: server stopped"
        assert "committed work" not in err

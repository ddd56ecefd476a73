"""The search app: handlers as plain functions, the Blocks layout, and one live round trip."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import types

# Before gradio is imported anywhere: no telemetry, no version check, no hub look-ups.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest
from PIL import Image

from xmodal.app import AppConfig
from xmodal.app.handlers import (
    UNEXPECTED_MESSAGE,
    QueryError,
    describe_collection,
    file_name,
    hit_label,
    parse_query,
    run_search,
)
from xmodal.errors import ImageDecodeError, XmodalError
from xmodal.index.records import Hit, Record

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
RECORDS = [
    Record(path="/photos/2023/IMG_0001.jpg", caption="a red square", width=40, height=30),
    Record(path="/photos/2023/beach_day.png", caption="green  field\nat noon"),
    Record(path="C:\\Users\\me\\Pictures\\blue.webp", caption=None),
]


class FakeRetriever:
    """Three generated images, scores falling with rank; refuses empty queries like the real one."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.thumb_calls: list[tuple[int, int]] = []
        self.broken_thumbs: set[int] = set()
        self.explode = False

    def search(self, text=None, image=None, *, k=10, threshold=None):
        self.calls.append({"text": text, "image": image, "k": k, "threshold": threshold})
        if self.explode:
            raise RuntimeError("secret internal detail /srv/index.faiss")
        if not text and image is None:
            raise XmodalError("The query is empty: give a text or an image.")
        hits = [Hit(id=10 + i, score=0.9 - 0.2 * i, record=r) for i, r in enumerate(RECORDS)]
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        return hits[:k]

    def describe(self):
        return {"model": "tiny-clip", "count": 3, "index": "Flat", "projection": None, "dim": 16}

    def load_thumbnail(self, hit_id, max_side=512):
        self.thumb_calls.append((hit_id, max_side))
        if hit_id in self.broken_thumbs:
            raise XmodalError(f"item {hit_id} is no longer readable")
        return Image.new("RGB", (48, 32), COLOURS[hit_id - 10])


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


@pytest.fixture
def fake_load_image(monkeypatch):
    """Stand in for ``xmodal.images.load_image`` whether or not that module exists yet."""
    calls: list[tuple] = []

    def load_image(source, *, max_pixels=None, draft_size=None):
        calls.append((source, max_pixels))
        if str(source).endswith(".txt"):
            raise ImageDecodeError("not-an-image", "this is not an image", source=str(source))
        return Image.new("RGB", (8, 8), (1, 2, 3))

    try:
        import xmodal.images as module
    except ImportError:
        module = types.ModuleType("xmodal.images")
        monkeypatch.setitem(sys.modules, "xmodal.images", module)
    monkeypatch.setattr(module, "load_image", load_image, raising=False)
    return calls


# --- handlers ----------------------------------------------------------------------------------


def test_label_has_score_file_name_and_caption_but_no_folder():
    hit = Hit(id=1, score=0.31234, record=RECORDS[0])
    assert hit_label(hit) == "0.312 · IMG_0001.jpg · a red square"
    long = Hit(id=2, score=-0.05, record=Record(path="x/y.jpg", caption="word " * 100))
    label = hit_label(long, caption_chars=20)
    assert label.startswith("-0.050 · y.jpg · word word")
    assert label.endswith("…") and len(label.split(" · ")[2]) == 20


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/a/b/c.jpg", "c.jpg"),
        ("C:\\Users\\me\\d.png", "d.png"),
        ("https://host/x/e.jpg?sig=1", "e.jpg"),
        ("shards/00001.tar::key/f.jpg", "f.jpg"),
    ],
)
def test_file_name_drops_folders_of_any_kind(path, name):
    assert file_name(path) == name


def test_text_search_returns_thumbnails_with_labels(retriever):
    outcome = run_search(retriever, "  a red thing ", None, 24, None, AppConfig())
    assert outcome.ok and outcome.message == "3 results."
    assert [h.id for h in outcome.hits] == [10, 11, 12]
    images = [item[0] for item in outcome.items]
    labels = [item[1] for item in outcome.items]
    assert all(isinstance(im, Image.Image) for im in images)
    assert images[1].getpixel((0, 0)) == COLOURS[1]
    assert labels == [
        "0.900 · IMG_0001.jpg · a red square",
        "0.700 · beach_day.png · green field at noon",
        "0.500 · blue.webp",
    ]
    assert retriever.calls == [{"text": "a red thing", "image": None, "k": 24, "threshold": None}]
    # Thumbnails are requested by catalog id only, at the configured size.
    assert retriever.thumb_calls == [(10, 512), (11, 512), (12, 512)]


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_empty_query_is_a_message_and_never_reaches_the_retriever(retriever, text):
    outcome = run_search(retriever, text, None, 24, None, AppConfig())
    assert not outcome.ok and outcome.items == () and outcome.hits == ()
    assert outcome.message == "Type a description or upload an image to search."
    assert retriever.calls == []


def test_retriever_errors_are_shown_as_their_message(retriever):
    # Bypass the app's own check to prove the retriever's XmodalError is caught too.
    real_search = retriever.search

    def search_ignoring_text(text=None, **kwargs):
        return real_search(text="", **kwargs)

    retriever.search = search_ignoring_text  # type: ignore[method-assign]
    outcome = run_search(retriever, "cat", None, 5, None, AppConfig())
    assert not outcome.ok
    assert outcome.message == "The query is empty: give a text or an image."


def test_unexpected_errors_are_logged_and_shown_generically(retriever, caplog):
    retriever.explode = True
    with caplog.at_level(logging.ERROR, logger="xmodal.app.handlers"):
        outcome = run_search(retriever, "cat", None, 5, None, AppConfig())
    assert not outcome.ok and outcome.message == UNEXPECTED_MESSAGE
    assert "secret" not in outcome.message and "Traceback" not in outcome.message
    record = caplog.records[-1]
    assert record.message == "search failed" and record.exc_info[0] is RuntimeError


def test_unreadable_thumbnail_becomes_a_placeholder(retriever):
    retriever.broken_thumbs = {11}
    outcome = run_search(retriever, "cat", None, 5, None, AppConfig(thumbnail_side=128))
    assert outcome.ok and len(outcome.items) == 3
    assert (
        outcome.items[1][1] == "0.700 · beach_day.png · green field at noon · (image unavailable)"
    )
    assert outcome.message == "3 results. 1 image could not be loaded."
    assert retriever.thumb_calls[0] == (10, 128)


def test_k_is_clamped_and_threshold_is_optional(retriever):
    config = AppConfig()
    run_search(retriever, "cat", None, 1000, "", config)
    run_search(retriever, "cat", None, 0.2, float("nan"), config)
    run_search(retriever, "cat", None, "7", "0.6", config)
    assert [(c["k"], c["threshold"]) for c in retriever.calls] == [(100, None), (1, None), (7, 0.6)]


def test_threshold_with_no_results_says_what_to_do(retriever):
    outcome = run_search(retriever, "cat", None, 5, 0.95, AppConfig())
    assert outcome.ok and outcome.items == ()
    assert outcome.message == "No results scored 0.95 or more; lower the minimum score."


@pytest.mark.parametrize(
    ("k", "threshold", "message"),
    [
        ("many", None, "The number of results must be a number from 1 to 100."),
        (float("inf"), None, "The number of results must be a number from 1 to 100."),
        (5, "high", "The minimum score must be a number, or left empty."),
    ],
)
def test_malformed_values_are_messages(retriever, k, threshold, message):
    outcome = run_search(retriever, "cat", None, k, threshold, AppConfig())
    assert not outcome.ok and outcome.message == message
    assert retriever.calls == []


def test_overlong_text_is_refused():
    with pytest.raises(QueryError, match="has 1,001 characters; shorten it to 1,000 or fewer"):
        parse_query("x" * 1001, None, 5, None, AppConfig())


def test_uploaded_image_is_decoded_with_the_shared_policy(retriever, fake_load_image):
    config = AppConfig(max_upload_pixels=1234)
    outcome = run_search(retriever, None, "/tmp/gradio/upload/q.jpg", 5, None, config)
    assert outcome.ok
    assert fake_load_image == [("/tmp/gradio/upload/q.jpg", 1234)]
    query_image = retriever.calls[0]["image"]
    assert isinstance(query_image, Image.Image) and query_image.getpixel((0, 0)) == (1, 2, 3)
    assert retriever.calls[0]["text"] is None


def test_undecodable_upload_is_a_message(retriever, fake_load_image):
    outcome = run_search(retriever, "cat", "/tmp/gradio/upload/notes.txt", 5, None, AppConfig())
    assert not outcome.ok
    assert outcome.message == "/tmp/gradio/upload/notes.txt: this is not an image [not-an-image]"
    assert retriever.calls == []


def test_pil_query_image_is_pixel_capped(retriever):
    big = Image.new("RGBA", (100, 100))
    outcome = run_search(retriever, None, big, 5, None, AppConfig(max_upload_pixels=9999))
    assert not outcome.ok
    assert outcome.message == (
        "The image has 100x100 pixels; the limit is 9,999 pixels. Upload a smaller image."
    )
    run_search(retriever, None, big, 5, None, AppConfig(max_upload_pixels=10_000))
    assert retriever.calls[0]["image"].mode == "RGB"


def test_describe_collection_line(retriever):
    assert describe_collection(retriever) == (
        "model tiny-clip · 3 items · index Flat · projection none · dim 16"
    )


def test_describe_failure_is_a_message(retriever, caplog):
    retriever.describe = lambda: 1 / 0  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        line = describe_collection(retriever)
    assert line == "Collection details are unavailable; the server log has the details."
    assert caplog.records[-1].exc_info[0] is ZeroDivisionError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_k": 0}, "default_k must be in 1..100"),
        ({"default_k": 30, "max_k": 20}, "default_k must be in 1..20"),
        ({"thumbnail_side": 0}, "thumbnail_side must be positive"),
        ({"concurrency_limit": 0}, "must be positive"),
    ],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AppConfig(**kwargs)


# --- Gradio layout -----------------------------------------------------------------------------


def test_escape_markdown_shows_user_data_literally():
    from xmodal.app.ui import escape_markdown

    assert escape_markdown("**x** <img src=y> [a](b)") == (r"\*\*x\*\* \<img src=y\> \[a\]\(b\)")


def test_build_app_returns_configured_blocks_without_launching(retriever):
    import gradio as gr

    from xmodal.app import build_app

    demo = build_app(retriever, title="Photos", config=AppConfig(queue_max_size=7))
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    assert demo.title == "Photos" and demo.analytics_enabled is False
    assert demo._queue.max_size == 7 and demo._queue.default_concurrency_limit == 1
    api_names = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert api_names == ["search"]
    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert len(galleries) == 1 and galleries[0].allow_preview
    assert retriever.calls == []


def test_loopback_detection():
    from xmodal.app.server import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2")


# --- live ----------------------------------------------------------------------------------


@pytest.fixture
def no_internet(monkeypatch):
    """Fail any connection or name lookup that is not this machine; record the attempts."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def local(host) -> bool:
        if host in ("localhost", "", None):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test blocked a connection to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"test blocked a lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_network_guard_blocks_outside_hosts(no_internet):
    with pytest.raises(OSError):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(OSError), socket.socket() as sock:
        sock.connect(("192.0.2.1", 80))
    assert no_internet == ["getaddrinfo example.com", "connect ('192.0.2.1', 80)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_round_trip_with_gradio_client(retriever, no_internet, fake_load_image, tmp_path):
    from gradio_client import Client, handle_file

    from xmodal.app import launch

    port = _free_port()
    demo = launch(retriever, port=port, block=False)
    try:
        assert demo.server_name == "127.0.0.1" and demo.server_port == port
        assert demo.share is False
        assert demo.max_file_size == AppConfig().max_upload_bytes
        client = Client(
            f"http://127.0.0.1:{port}/",
            verbose=False,
            download_files=str(tmp_path),
            analytics_enabled=False,
        )
        try:
            gallery, status = client.predict("a red thing", None, 2, None, api_name="/search")
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

            gallery, status = client.predict("   ", None, 5, None, api_name="/search")
            assert gallery == []
            assert status == r"**Error:** Type a description or upload an image to search\."

            query = tmp_path / "query.png"
            Image.new("RGB", (20, 10), (9, 9, 9)).save(query)
            gallery, status = client.predict(
                "", handle_file(str(query)), 24, 0.6, api_name="/search"
            )
            assert status == r"2 results\." and len(gallery) == 2
            # The handler got Gradio's copy of the upload, not the client's path, and decoded it
            # itself with the app's pixel cap.
            [(uploaded, max_pixels)] = fake_load_image
            assert uploaded != str(query) and uploaded.endswith(".png")
            assert max_pixels == AppConfig().max_upload_pixels
        finally:
            client.close()
    finally:
        demo.close()
    assert no_internet == []
    assert [(c["text"], c["k"], c["threshold"]) for c in retriever.calls] == [
        ("a red thing", 2, None),
        (None, 24, 0.6),
    ]

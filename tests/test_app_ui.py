"""The Gradio page: built without launching, wired to the handlers, the selected-result view."""

from __future__ import annotations

import pytest
from app_helpers import COLOURS, FakeRetriever
from PIL import Image

from xmodal.app import AppConfig
from xmodal.app.selection import Selection, select_result


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


def test_escape_markdown_shows_user_data_literally():
    from xmodal.app.ui import escape_markdown

    assert escape_markdown("**x** <img src=y> [a](b)") == (r"\*\*x\*\* \<img src=y\> \[a\]\(b\)")


def test_build_app_returns_configured_blocks_without_launching(retriever):
    import gradio as gr

    from xmodal.app import build_app

    demo = build_app(retriever, title="Photos", config=AppConfig(queue_max_size=7))
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    assert demo.title == "Photos" and demo.analytics_enabled is False
    assert demo._queue.max_size == 7 and demo._queue.default_concurrency_limit == 4
    api_names = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert api_names == ["search"]
    [search] = [fn for fn in demo.fns.values() if fn.api_name == "search"]
    labels = [block.label for block in search.inputs]
    assert labels == [
        "Describe what you are looking for",
        "Or search by image (upload or paste)",
        "Results",
        "Minimum score (optional)",
        "Without (optional)",
        "Image weight when searching by text and image",
        "Filter (optional)",
        "Search mode (words: captions and file names)",
    ]
    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert len(galleries) == 1
    buttons = [b.value for b in demo.blocks.values() if isinstance(b, gr.Button)]
    assert buttons == ["Search", "More like this", "Find duplicates", "Find outliers"]
    assert retriever.calls == []


def test_search_function_of_the_page_returns_gallery_status_and_shown_ids(retriever):
    from xmodal.app import build_app

    demo = build_app(retriever)
    [search] = [fn for fn in demo.fns.values() if fn.api_name == "search"]
    items, status, shown = search.fn("red", None, 2, "", "people", 0.5, "ext:jpg")
    assert status == r"2 results\."
    assert shown == [[10, "0.900 · IMG_0001.jpg · a red square"], [11, items[1][1]]]
    assert retriever.calls[0]["negative"] == "people" and retriever.calls[0]["where"] == "ext:jpg"
    items, status, shown = search.fn("", None, 2, "", "", 0.5, "")
    assert status == r"**Error:** Type a description or upload an image to search\."
    assert items == [] and shown == []


def test_selecting_a_result_loads_a_larger_view_by_id(retriever):
    shown = [[10, "0.900 · a"], [11, "0.700 · b"]]
    chosen = select_result(retriever, shown, 1, AppConfig())
    assert chosen.hit_id == 11 and chosen.details == "0.700 · b"
    assert isinstance(chosen.image, Image.Image) and chosen.image.getpixel((0, 0)) == COLOURS[1]
    assert retriever.thumb_calls == [(11, 1024)]
    select_result(retriever, shown, 0, AppConfig(max_image_side=300))
    assert retriever.thumb_calls[-1] == (10, 300)


@pytest.mark.parametrize("index", [5, None, "x"])
def test_selecting_a_stale_position_is_a_message(retriever, index):
    chosen = select_result(retriever, [[10, "a"]], index, AppConfig())
    assert chosen == Selection(None, None, "That result is no longer shown; search again.")
    assert retriever.thumb_calls == []


def test_selection_of_an_unreadable_item_says_so(retriever):
    retriever.broken_thumbs = {10}
    chosen = Selection.load(retriever, 10, AppConfig(), details="0.9 · a")
    assert chosen == Selection(10, None, "0.9 · a (image unavailable)")
    assert Selection.load(retriever, None, AppConfig()).details == "Select a result first."


def test_loopback_detection():
    from xmodal.app.server import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_image_side": 0}, "max_image_side must be positive"),
        ({"max_connections": 0}, "max_connections must be positive"),
        ({"auth_token": "short"}, "auth_token must have at least 8 characters"),
    ],
)
def test_server_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AppConfig(**kwargs)


def test_token_is_not_in_the_config_repr():
    assert "s3cret-value" not in repr(AppConfig(auth_token="s3cret-value"))

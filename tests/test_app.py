"""The search app's handlers as plain functions: parsing, labels, errors, no server."""

from __future__ import annotations

import logging

import pytest
from app_helpers import COLOURS, RECORDS, FakeRetriever, install_fake_load_image
from PIL import Image

from xmodal.app import AppConfig
from xmodal.app.handlers import (
    UNEXPECTED_MESSAGE,
    QueryError,
    RawQuery,
    describe_collection,
    file_name,
    hit_label,
    parse_query,
    run_search,
)
from xmodal.index.records import Hit, Record


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


@pytest.fixture
def fake_load_image(monkeypatch):
    return install_fake_load_image(monkeypatch)


def q(text=None, image=None, k=24, threshold=None, **rest) -> RawQuery:
    return RawQuery(text=text, image=image, k=k, threshold=threshold, **rest)


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
    outcome = run_search(retriever, q("  a red thing ", None, 24, None), AppConfig())
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
    assert retriever.calls == [
        {
            "text": "a red thing",
            "image": None,
            "k": 24,
            "threshold": None,
            "negative": None,
            "image_weight": 0.5,
            "where": None,
            "mode": "vector",
            "keyword_weight": 0.5,
        }
    ]
    # Thumbnails are requested by catalog id only, at the configured size.
    assert retriever.thumb_calls == [(10, 512), (11, 512), (12, 512)]


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_empty_query_is_a_message_and_never_reaches_the_retriever(retriever, text):
    outcome = run_search(retriever, q(text, None, 24, None), AppConfig())
    assert not outcome.ok and outcome.items == () and outcome.hits == ()
    assert outcome.message == "Type a description or upload an image to search."
    assert retriever.calls == []


def test_retriever_errors_are_shown_as_their_message(retriever):
    # Bypass the app's own check to prove the retriever's XmodalError is caught too.
    real_search = retriever.search_result

    def search_ignoring_text(text=None, **kwargs):
        return real_search(text="", **kwargs)

    retriever.search_result = search_ignoring_text  # type: ignore[method-assign]
    outcome = run_search(retriever, q("cat", None, 5, None), AppConfig())
    assert not outcome.ok
    assert outcome.message == "The query is empty: give a text or an image."


def test_unexpected_errors_are_logged_and_shown_generically(retriever, caplog):
    retriever.explode = True
    with caplog.at_level(logging.ERROR, logger="xmodal.app.handlers"):
        outcome = run_search(retriever, q("cat", None, 5, None), AppConfig())
    assert not outcome.ok and outcome.message == UNEXPECTED_MESSAGE
    assert "secret" not in outcome.message and "Traceback" not in outcome.message
    record = caplog.records[-1]
    assert record.message == "search failed" and record.exc_info[0] is RuntimeError


def test_unreadable_thumbnail_becomes_a_placeholder(retriever):
    retriever.broken_thumbs = {11}
    outcome = run_search(retriever, q("cat", None, 5, None), AppConfig(thumbnail_side=128))
    assert outcome.ok and len(outcome.items) == 3
    assert (
        outcome.items[1][1] == "0.700 · beach_day.png · green field at noon · (image unavailable)"
    )
    assert outcome.message == "3 results. 1 image could not be loaded."
    assert retriever.thumb_calls[0] == (10, 128)


def test_k_over_the_maximum_is_lowered_and_said(retriever):
    config = AppConfig()
    clamped = run_search(retriever, q("cat", None, 1000, ""), config)
    run_search(retriever, q("cat", None, "7", "0.6"), config)
    run_search(retriever, q("cat", None, 2.0, None), config)
    assert [(c["k"], c["threshold"]) for c in retriever.calls] == [(100, None), (7, 0.6), (2, None)]
    assert clamped.message == "3 results. Showing at most 100 results (asked for 1000)."


def test_no_results_shows_the_retrievers_reason(retriever):
    outcome = run_search(retriever, q("cat", None, 5, 0.95), AppConfig())
    assert outcome.ok and outcome.items == ()
    assert outcome.message == "nothing at 0.95"


K_RULE = "k (the number of results) must be a whole number of at least 1, got "


@pytest.mark.parametrize(
    ("k", "threshold", "message"),
    [
        ("many", None, K_RULE + "'many'"),
        (float("inf"), None, K_RULE + "inf"),
        (0, None, K_RULE + "0"),
        (-3, None, K_RULE + "-3"),
        (0.2, None, K_RULE + "0.2"),
        (5, "high", "The minimum score must be a number, or left empty."),
        (5, float("nan"), "The minimum score must be a finite number, or left empty."),
        (5, "inf", "The minimum score must be a finite number, or left empty."),
    ],
)
def test_malformed_values_are_messages(retriever, k, threshold, message):
    outcome = run_search(retriever, q("cat", None, k, threshold), AppConfig())
    assert not outcome.ok and outcome.message == message
    assert retriever.calls == []


def test_overlong_text_is_refused():
    with pytest.raises(QueryError, match="has 1,001 characters; shorten it to 1,000 or fewer"):
        parse_query(q("x" * 1001), AppConfig())


def test_uploaded_image_is_decoded_with_the_shared_policy(retriever, fake_load_image):
    config = AppConfig(max_upload_pixels=1234)
    outcome = run_search(retriever, q(None, "/tmp/gradio/upload/q.jpg", 5, None), config)
    assert outcome.ok
    assert fake_load_image == [("/tmp/gradio/upload/q.jpg", 1234)]
    query_image = retriever.calls[0]["image"]
    assert isinstance(query_image, Image.Image) and query_image.getpixel((0, 0)) == (1, 2, 3)
    assert retriever.calls[0]["text"] is None


def test_undecodable_upload_is_a_message(retriever, fake_load_image):
    outcome = run_search(retriever, q("cat", "/tmp/gradio/upload/notes.txt", 5, None), AppConfig())
    assert not outcome.ok
    assert outcome.message == "/tmp/gradio/upload/notes.txt: this is not an image [not-an-image]"
    assert retriever.calls == []


def test_pil_query_image_is_pixel_capped(retriever):
    big = Image.new("RGBA", (100, 100))
    outcome = run_search(retriever, q(None, big, 5, None), AppConfig(max_upload_pixels=9999))
    assert not outcome.ok
    assert outcome.message == (
        "The image has 100x100 pixels; the limit is 9,999 pixels. Upload a smaller image."
    )
    run_search(retriever, q(None, big, 5, None), AppConfig(max_upload_pixels=10_000))
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


def test_negative_weight_and_filter_reach_the_retriever(retriever):
    raw = q("beach", k=3, negative="  people ", image_weight="0.25", where="ext:jpg")
    outcome = run_search(retriever, raw, AppConfig())
    assert outcome.ok
    call = retriever.calls[0]
    assert (call["negative"], call["image_weight"], call["where"]) == ("people", 0.25, "ext:jpg")


@pytest.mark.parametrize("weight", [-0.1, 1.5, "heavy", float("nan")])
def test_image_weight_outside_0_1_is_a_message(retriever, weight):
    outcome = run_search(retriever, q("cat", image_weight=weight), AppConfig())
    assert not outcome.ok
    assert outcome.message == (
        "The image weight must be a number from 0 (text only) to 1 (image only)."
    )
    assert retriever.calls == []


def test_overlong_negative_and_filter_are_refused():
    config = AppConfig(max_text_chars=10)
    with pytest.raises(QueryError, match="The negative text has 11 characters; shorten it to 10"):
        parse_query(q("cat", negative="y" * 11), config)
    with pytest.raises(QueryError, match="The filter has 11 characters"):
        parse_query(q("cat", where="z" * 11), config)


def test_missing_k_uses_the_default():
    assert parse_query(q("cat", k=None), AppConfig(default_k=7)).k == 7


def test_bytes_upload_over_the_byte_cap_is_refused_before_decoding(fake_load_image):
    with pytest.raises(QueryError, match="The image has 101 bytes; the limit is 100 bytes"):
        parse_query(q(image=b"x" * 101), AppConfig(max_upload_bytes=100))
    assert fake_load_image == []


def test_base64_images_are_checked_before_and_after_decoding():
    from app_helpers import b64

    from xmodal.app.query import UploadTooLarge, decode_base64_image

    config = AppConfig(max_upload_bytes=30)
    assert decode_base64_image(b64(b"hello"), config) == b"hello"
    assert decode_base64_image("data:image/png;base64," + b64(b"hi"), config) == b"hi"
    with pytest.raises(UploadTooLarge, match="the limit is 30 bytes"):
        decode_base64_image(b64(b"x" * 40), config)
    with pytest.raises(QueryError, match="The image is not valid base64"):
        decode_base64_image("not base64 !!", config)
    with pytest.raises(QueryError, match="The image must be a base64 string"):
        decode_base64_image(123, config)

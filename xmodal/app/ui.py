"""The Gradio layout of the search page. Behaviour lives in ``handlers``; this only wires it."""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from xmodal.app.config import AppConfig
from xmodal.app.curation_ui import curation_tabs
from xmodal.app.handlers import RawQuery, RetrieverLike, describe_collection, run_search
from xmodal.app.selection import Selection, select_result

SEARCH_API_NAME = "search"

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def escape_markdown(text: str) -> str:
    """Show ``text`` literally in a ``gr.Markdown``: file names and captions are user data."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def build_app(
    retriever: RetrieverLike, *, title: str = "xmodal", config: AppConfig | None = None
) -> gr.Blocks:
    """Build the search page for ``retriever`` without launching it; the queue is configured.

    Images reach the browser only as thumbnails returned by ``retriever.load_thumbnail(id)``;
    no catalog path is ever handed to Gradio, so it never needs ``allowed_paths``.
    """
    config = config or AppConfig()

    def search(text, image, k, threshold, negative, image_weight, where, mode="vector"):
        raw = RawQuery(text, image, k, threshold, negative, image_weight, where, mode)
        outcome = run_search(retriever, raw, config)
        status = escape_markdown(outcome.message)
        shown = [
            [hit.id, label] for hit, (_, label) in zip(outcome.hits, outcome.items, strict=True)
        ]
        return list(outcome.items), status if outcome.ok else f"**Error:** {status}", shown

    def header() -> str:
        return f"## {escape_markdown(title)}\n{escape_markdown(describe_collection(retriever))}"

    def on_select(shown: list, event: gr.SelectData):
        chosen = select_result(retriever, shown, event.index, config)
        return chosen.image, escape_markdown(chosen.details), chosen.hit_id

    def clear_selection():
        return None, "", None

    def more_like_this(hit_id: int | None):
        chosen = Selection.load(retriever, hit_id, config)
        if chosen.image is None:
            raise gr.Error(chosen.details, print_exception=False)
        return chosen.image, ""

    with gr.Blocks(
        title=title,
        analytics_enabled=False,
        delete_cache=(config.cache_sweep_s, config.cache_sweep_s),
    ) as demo:
        heading = gr.Markdown(header())
        query = _query_widgets(config)
        status = gr.Markdown("")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gallery = gr.Gallery(
                    label="Results (click one for a larger view)",
                    columns=6,
                    height="auto",
                    object_fit="contain",
                    allow_preview=False,
                    interactive=False,
                    elem_id="results",
                )
            with gr.Column(scale=2):
                large = gr.Image(
                    label="Selected result",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    height=420,
                    elem_id="selected",
                )
                details = gr.Markdown("")
                more = gr.Button("More like this", elem_id="more-like-this")
        hit_ids = gr.State([])
        selected = gr.State(None)
        inputs = [query[name] for name in _QUERY_ORDER]
        searched = gr.on(
            triggers=[query["button"].click, query["text"].submit],
            fn=search,
            inputs=inputs,
            outputs=[gallery, status, hit_ids],
            api_name=SEARCH_API_NAME,
            api_description="Search the collection by text and/or image, optionally with a "
            "negative text, a text/image weight and a filter; returns labelled thumbnails and "
            "a status line.",
        )
        # a new result list: the larger view of an old result would look like one of the new
        searched.then(clear_selection, outputs=[large, details, selected], api_visibility="private")
        gallery.select(
            on_select, inputs=hit_ids, outputs=[large, details, selected], api_visibility="private"
        )
        more.click(
            more_like_this,
            inputs=selected,
            outputs=[query["image"], query["text"]],
            api_visibility="private",
        ).success(
            search, inputs=inputs, outputs=[gallery, status, hit_ids], api_visibility="private"
        ).then(clear_selection, outputs=[large, details, selected], api_visibility="private")
        curation_tabs(retriever, config)
        # Refreshed on every page load so the count follows the collection; not an API endpoint.
        demo.load(header, outputs=heading, api_visibility="private", concurrency_limit=None)
    demo.queue(
        max_size=config.queue_max_size,
        default_concurrency_limit=config.concurrency_limit,
    )
    return demo


_QUERY_ORDER = ("text", "image", "k", "threshold", "negative", "image_weight", "where", "mode")


def _query_widgets(config: AppConfig) -> dict[str, Any]:
    """The query form: text, image, and the optional refinements."""
    widgets: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            widgets["text"] = gr.Textbox(
                label="Describe what you are looking for",
                placeholder="a dog running on a beach (Enter to search)",
                max_length=config.max_text_chars,
                lines=1,
                max_lines=1,
                elem_id="query-text",
            )
            with gr.Row():
                widgets["negative"] = gr.Textbox(
                    label="Without (optional)",
                    placeholder="people",
                    max_length=config.max_text_chars,
                    max_lines=1,
                )
                widgets["where"] = gr.Textbox(
                    label="Filter (optional)",
                    placeholder="ext:jpg and width>=1024, path:*/2023/*",
                    max_length=config.max_text_chars,
                    max_lines=1,
                )
            with gr.Row():
                widgets["k"] = gr.Slider(
                    minimum=1, maximum=config.max_k, value=config.default_k, step=1, label="Results"
                )
                # A text box, not gr.Number: the browser renders an empty Number as 0,
                # which would silently drop every negative score (common with SigLIP).
                widgets["threshold"] = gr.Textbox(
                    value="",
                    placeholder="e.g. 0.25 (cosine, -1 to 1)",
                    label="Minimum score (optional)",
                    max_lines=1,
                )
            widgets["mode"] = gr.Radio(
                choices=[("By meaning", "vector"), ("By words", "keyword"), ("Both", "hybrid")],
                value="vector",
                label="Search mode (words: captions and file names)",
                elem_id="search-mode",
            )
            widgets["button"] = gr.Button("Search", variant="primary", elem_id="search-button")
        with gr.Column(scale=1):
            # A file path, not a PIL image: the handler decodes it with xmodal.images, the same
            # policy (EXIF, modes, pixel cap) that indexing used. image_mode=None keeps Gradio
            # from decoding and re-encoding the upload itself.
            widgets["image"] = gr.Image(
                label="Or search by image (upload or paste)",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=200,
            )
            widgets["image_weight"] = gr.Slider(
                minimum=0.0,
                maximum=1.0,
                value=0.5,
                step=0.05,
                label="Image weight when searching by text and image",
            )
    return widgets

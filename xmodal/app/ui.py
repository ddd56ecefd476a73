"""The Gradio layout of the search page. Behaviour lives in ``handlers``; this only wires it."""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from xmodal.app.config import AppConfig
from xmodal.app.handlers import RetrieverLike, describe_collection, run_search

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

    def search(text: str | None, image: Any, k: float, threshold: float | None):
        outcome = run_search(retriever, text, image, k, threshold, config)
        status = escape_markdown(outcome.message)
        return list(outcome.items), status if outcome.ok else f"**Error:** {status}"

    def header() -> str:
        return f"## {escape_markdown(title)}\n{escape_markdown(describe_collection(retriever))}"

    with gr.Blocks(
        title=title,
        analytics_enabled=False,
        delete_cache=(config.cache_sweep_s, config.cache_sweep_s),
    ) as demo:
        heading = gr.Markdown(header())
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(
                    label="Describe what you are looking for",
                    placeholder="a dog running on a beach (Enter to search)",
                    max_length=config.max_text_chars,
                    lines=1,
                    max_lines=1,
                )
                with gr.Row():
                    k = gr.Slider(
                        minimum=1,
                        maximum=config.max_k,
                        value=config.default_k,
                        step=1,
                        label="Results",
                    )
                    # A text box, not gr.Number: the browser renders an empty Number as 0,
                    # which would silently drop every negative score (common with SigLIP).
                    threshold = gr.Textbox(
                        value="",
                        placeholder="e.g. 0.25 (cosine, -1 to 1)",
                        label="Minimum score (optional)",
                        max_lines=1,
                    )
                button = gr.Button("Search", variant="primary")
            with gr.Column(scale=1):
                # A file path, not a PIL image: the handler decodes it with xmodal.images, the same
                # policy (EXIF, modes, pixel cap) that indexing used. image_mode=None keeps Gradio
                # from decoding and re-encoding the upload itself.
                image = gr.Image(
                    label="Or search by image (optional)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=200,
                )
        status = gr.Markdown("")
        gallery = gr.Gallery(
            label="Results",
            columns=6,
            height="auto",
            object_fit="contain",
            allow_preview=True,
            interactive=False,
            buttons=["download", "fullscreen"],
        )
        gr.on(
            triggers=[button.click, text.submit],
            fn=search,
            inputs=[text, image, k, threshold],
            outputs=[gallery, status],
            api_name=SEARCH_API_NAME,
            api_description="Search the collection by text and/or image; returns labelled "
            "thumbnails and a status line.",
        )
        # Refreshed on every page load so the count follows the collection; not an API endpoint.
        demo.load(header, outputs=heading, api_visibility="private", concurrency_limit=None)
    demo.queue(
        max_size=config.queue_max_size,
        default_concurrency_limit=config.concurrency_limit,
    )
    return demo

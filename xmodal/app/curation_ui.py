"""The Duplicates and Outliers tabs of the page; behaviour lives in ``xmodal.app.curation``."""

from __future__ import annotations

import gradio as gr

from xmodal.app.config import AppConfig
from xmodal.app.curation import duplicates_html, outliers_html
from xmodal.app.handlers import RetrieverLike


def curation_tabs(retriever: RetrieverLike, config: AppConfig) -> None:
    """Add the tabs inside the current ``gr.Blocks``; nothing runs until a button is pressed."""
    with gr.Tabs():
        with gr.Tab("Duplicates", elem_id="duplicates-tab"):
            with gr.Row():
                threshold = gr.Number(value=0.95, label="Cosine threshold, (-1, 1]", step=0.01)
                keep = gr.Dropdown(
                    ["largest", "oldest", "newest", "first"], value="largest", label="Keep"
                )
                where = gr.Textbox(
                    label="Filter (optional)", max_lines=1, max_length=config.max_text_chars
                )
            find = gr.Button("Find duplicates", elem_id="duplicates-button")
            groups = gr.HTML(elem_id="duplicates")
            find.click(
                lambda t, r, w: duplicates_html(retriever, t, r, w),
                inputs=[threshold, keep, where],
                outputs=groups,
                api_visibility="private",
            )
        with gr.Tab("Outliers", elem_id="outliers-tab"):
            with gr.Row():
                top = gr.Number(value=20, label="How many", precision=0)
                k = gr.Number(value=10, label="Neighbours (k)", precision=0)
                narrow = gr.Textbox(
                    label="Filter (optional)", max_lines=1, max_length=config.max_text_chars
                )
            rank = gr.Button("Find outliers", elem_id="outliers-button")
            ranked = gr.HTML(elem_id="outliers")
            rank.click(
                lambda t, n, w: outliers_html(retriever, t, n, w),
                inputs=[top, k, narrow],
                outputs=ranked,
                api_visibility="private",
            )

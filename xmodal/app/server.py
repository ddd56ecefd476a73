"""Launching the search app: local-only by default, no share tunnel, no telemetry."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from xmodal.app.config import AppConfig
from xmodal.app.handlers import RetrieverLike

log = logging.getLogger(__name__)


def serve(retriever: RetrieverLike, **options: Any) -> None:
    """Serve the search page and block until interrupted; ``options`` as for :func:`launch`."""
    launch(retriever, **options, block=True)


def launch(
    retriever: RetrieverLike,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    open_browser: bool = False,
    title: str = "xmodal",
    config: AppConfig | None = None,
    block: bool = True,
):
    """Build and launch the app; with ``block=False`` return the running ``gr.Blocks``.

    Everything that could reach the network or leave data behind is switched off explicitly
    rather than left to Gradio's defaults, which differ between versions and environments.
    """
    from xmodal.app.ui import build_app

    config = config or AppConfig()
    if not _is_loopback(host):
        log.warning(
            "serving on %s: anyone who can reach this address can search the collection "
            "and see its images",
            host,
        )
    demo = build_app(retriever, title=title, config=config)
    demo.launch(
        server_name=host,
        server_port=port,
        inbrowser=open_browser,
        share=False,
        prevent_thread_lock=not block,
        show_error=False,
        max_file_size=config.max_upload_bytes,
        enable_monitoring=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        run_history=False,
        quiet=True,  # the CLI prints the address itself; Gradio would also advertise share=True
    )
    return demo


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""One server for the page and the API: local-only by default, no share tunnel, no telemetry.

The Gradio page is mounted on a FastAPI app next to the JSON API and the clip-retrieval routes,
and the whole app is wrapped by the token guard and the body cap, so Gradio's own routes
(``/gradio_api/...``, uploads, ``file=``) are covered exactly like ours.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from xmodal.app.config import AppConfig
from xmodal.app.handlers import RetrieverLike

log = logging.getLogger(__name__)

# Room for multipart and base64 framing around an image of max_upload_bytes.
BODY_OVERHEAD = 1 << 20


def create_app(
    retriever: RetrieverLike,
    *,
    title: str = "xmodal",
    config: AppConfig | None = None,
    index_name: str = "xmodal",
) -> Any:
    """The complete ASGI app (page + API + clip-retrieval protocol + guards), not started."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware

    from xmodal.app.admission import Admission
    from xmodal.app.api import api_router, validation_error
    from xmodal.app.batching import batched
    from xmodal.app.clip_protocol import clip_router
    from xmodal.app.security import BodyLimit, TokenGuard
    from xmodal.app.ui import build_app
    from xmodal.app.uploads import UploadedFilesOnly

    config = config or AppConfig()
    retriever = batched(retriever)
    admission = Admission(config.concurrency_limit, config.queue_max_size)
    app = FastAPI(title=f"{title} search API", version="1", docs_url="/docs", redoc_url=None)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(api_router(retriever, config, admission))
    app.include_router(clip_router(retriever, config, admission, index_name))
    app.router.on_shutdown.append(admission.close)
    demo = build_app(retriever, title=title, config=config)
    app = gr.mount_gradio_app(
        app,
        demo,
        path="/",
        show_error=False,
        max_file_size=config.max_upload_bytes,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=["api"],
    )
    app.state.admission = admission
    # Gradio's own check of client file paths is off on a mounted (never launched) page.
    guarded: Any = UploadedFilesOnly(app, demo.GRADIO_CACHE)
    guarded = BodyLimit(guarded, config.max_upload_bytes * 4 // 3 + BODY_OVERHEAD)
    if config.auth_token:
        guarded = TokenGuard(guarded, config.auth_token)
    if config.cors_origins:
        # Outside the token guard: a browser's preflight carries no token, and a 401 must
        # carry CORS headers too, or the calling page cannot read it.
        guarded = CORSMiddleware(
            guarded,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return guarded


@dataclass
class RunningServer:
    """A server started by :func:`launch` with ``block=False``; ``close()`` stops it."""

    url: str
    host: str
    port: int
    app: Any
    _server: Any
    _thread: threading.Thread

    def close(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def serve(retriever: RetrieverLike, **options: Any) -> None:
    """Serve the page and the API and block until interrupted; ``options`` as for :func:`launch`."""
    launch(retriever, **options, block=True)


def launch(
    retriever: RetrieverLike,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    title: str = "xmodal",
    config: AppConfig | None = None,
    index_name: str = "xmodal",
    block: bool = True,
) -> RunningServer | None:
    """Start the server; with ``block=False`` return a :class:`RunningServer` once it listens."""
    import uvicorn

    config = config or AppConfig()
    if not _is_loopback(host):
        log.warning(
            "serving on %s: anyone who can reach this address can %s",
            host,
            "use the token to search"
            if config.auth_token
            else "search the collection and see its images (set an access token with --auth-token)",
        )
    app = create_app(retriever, title=title, config=config, index_name=index_name)
    if not any(isinstance(f, _OpenStreamsCut) for f in logging.getLogger("uvicorn.error").filters):
        logging.getLogger("uvicorn.error").addFilter(_OpenStreamsCut())
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            limit_concurrency=config.max_connections,
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    if block:
        server.run()
        return None
    thread = threading.Thread(target=server.run, name="xmodal-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    url_host = f"[{host}]" if ":" in host else host
    return RunningServer(f"http://{url_host}:{port}/", host, port, app, server, thread)


class _OpenStreamsCut(logging.Filter):
    """Hide the tracebacks of open page streams cut at shutdown: expected, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError):
            return False
        return "timeout graceful shutdown exceeded" not in record.getMessage()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

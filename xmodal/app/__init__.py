"""The search page (Gradio) and the HTTP API (FastAPI): the only room that imports either.

``build_app``, ``create_app``, ``launch`` and ``serve`` import gradio on first use, so
``xmodal.app.handlers`` stays cheap to import for other front ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmodal.app.config import AppConfig

if TYPE_CHECKING:
    from xmodal.app.server import create_app, launch, serve
    from xmodal.app.ui import build_app

__all__ = ["AppConfig", "build_app", "create_app", "launch", "serve"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from xmodal.app.ui import build_app

        return build_app
    if name in ("serve", "launch", "create_app"):
        from xmodal.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'xmodal.app' has no attribute {name!r}")

"""The Gradio search UI (and, later, the HTTP API): the only room that imports gradio.

``build_app`` and ``serve`` import gradio on first use, so ``xmodal.app.handlers`` stays cheap
to import for other front ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmodal.app.config import AppConfig

if TYPE_CHECKING:
    from xmodal.app.server import launch, serve
    from xmodal.app.ui import build_app

__all__ = ["AppConfig", "build_app", "launch", "serve"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from xmodal.app.ui import build_app

        return build_app
    if name in ("serve", "launch"):
        from xmodal.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'xmodal.app' has no attribute {name!r}")

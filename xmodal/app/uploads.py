"""Gradio's routes accept only files that were uploaded through Gradio's own upload route.

A client of the page names a file by a ``FileData`` object (``{"path": ..., "url": ...,
"meta": {"_type": "gradio.FileData"}}``). Gradio copies whatever that path names into its cache
and serves the copy back; its check that the path is an upload is skipped unless the Blocks was
``launch()``-ed, which a page mounted on our FastAPI app never is. So ``/etc/passwd`` would be
copied and served, any image on the machine could be used as a query, and ``/dev/zero`` or a FIFO
would block a worker for good. This guard reads the JSON body of every request to Gradio's
routes first and refuses it unless each file it names is a regular file inside the upload
folder, where Gradio stores the browser's uploads and the page's own thumbnails.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from typing import Any
from urllib.parse import unquote, urlsplit

from xmodal.app.security import ASGIApp, Message, Receive, Scope, Send, send_json

log = logging.getLogger(__name__)

GRADIO_PREFIX = "/gradio_api"
# Bodies that never carry FileData: the multipart upload itself, and our own JSON routes,
# whose models take strings only.
NOT_INSPECTED = frozenset({f"{GRADIO_PREFIX}/upload", "/api/search", "/knn-service", "/metadata"})
REFUSED_MESSAGE = (
    "This server only accepts images uploaded through the page; upload the image again."
)
MALFORMED_MESSAGE = "The request body is nested too deeply."
FILE_TYPE = "gradio.FileData"


def refusal(value: Any, upload_dir: str, hosts: frozenset[str]) -> str | None:
    """Why ``value`` (a parsed JSON body) names a file it may not, or None when it is fine.

    A dict is a file reference when it has a ``path`` or says it is ``gradio.FileData``; Gradio
    treats both as files. Each must name, without a symlink anywhere, a regular file inside
    ``upload_dir``; a ``url`` may only be this server's ``/file=`` address of that same path.
    Nothing is opened: ``lstat`` on a FIFO or a device returns at once.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if _is_file_ref(item) and not _allowed(item, upload_dir, hosts):
                return f"refused file reference {str(item.get('path'))[:200]!r}"
            stack.extend(item.values())
    return None


def _is_file_ref(item: dict) -> bool:
    meta = item.get("meta")
    return "path" in item or (isinstance(meta, dict) and meta.get("_type") == FILE_TYPE)


def _allowed(item: dict, upload_dir: str, hosts: frozenset[str]) -> bool:
    path = item.get("path")
    if not isinstance(path, str) or not path or "\x00" in path:
        return False
    real = os.path.realpath(path)
    if real != os.path.abspath(path) or os.path.commonpath([real, upload_dir]) != upload_dir:
        return False
    try:
        if not stat.S_ISREG(os.lstat(real).st_mode):
            return False
    except OSError:
        return False
    return _same_file_url(item.get("url"), path, hosts)


def _same_file_url(url: Any, path: str, hosts: frozenset[str]) -> bool:
    """No url, or the page's own ``{root}/gradio_api/file={path}`` for this very file."""
    if url is None:
        return True
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https") or (parts.netloc and parts.netloc not in hosts):
        return False
    return unquote(parts.path).endswith(f"{GRADIO_PREFIX}/file={path}")


class UploadedFilesOnly:
    """ASGI middleware: refuse (400) any request to Gradio naming a file it did not receive.

    ``upload_dir`` is Gradio's cache folder (``Blocks.GRADIO_CACHE``). The body is read in full
    before the route sees it (the body cap in front bounds it) and handed on unchanged.
    """

    def __init__(self, app: ASGIApp, upload_dir: str) -> None:
        self.app = app
        self.upload_dir = os.path.realpath(upload_dir)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in NOT_INSPECTED
        ):
            return await self.app(scope, receive, send)
        body, complete = await _read_body(receive)
        if not complete:  # the client left, or the body cap already answered
            return None
        problem = self._problem(scope, body)
        if problem is not None:
            log.warning("refused %s %s: %s", scope.get("method"), scope["path"], problem)
            detail = MALFORMED_MESSAGE if problem == MALFORMED_MESSAGE else REFUSED_MESSAGE
            return await send_json(send, 400, detail)
        return await self.app(scope, _replay(body, receive), send)

    def _problem(self, scope: Scope, body: bytes) -> str | None:
        try:
            value = json.loads(body) if body else None
        except RecursionError:
            return MALFORMED_MESSAGE
        except ValueError:  # not JSON: Gradio's JSON routes refuse it themselves
            return None
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        hosts = frozenset(h for h in (headers.get(b"host"), headers.get(b"x-forwarded-host")) if h)
        return refusal(value, self.upload_dir, hosts)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later reads wait for the disconnect, as usual

    return replay

"""Guards in front of every route, Gradio's own included: an access token and a body-size cap.

Both are plain ASGI middleware, so they see each request before any router (ours or Gradio's)
does and cover HTTP and WebSocket alike.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE_NAME = "xmodal_token"
TOKEN_PARAM = "token"
UNAUTHORIZED_MESSAGE = (
    "This server needs an access token: send 'Authorization: Bearer TOKEN', or open the page "
    "once as /?token=TOKEN in a browser."
)


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing says nothing about the token."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _cookie(headers: dict[str, str]) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is simply no token
        return None
    morsel = cookies.get(COOKIE_NAME)
    return morsel.value if morsel else None


async def send_json(send: Send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """Refuse every request without the token (header, cookie, or ``?token=`` once).

    A valid ``?token=`` on a GET answers with a redirect to the same address without it and sets
    an HttpOnly, SameSite=Strict cookie, so the token leaves the address bar and browser history
    and the page's own requests (Gradio's queue, uploads, files) carry it from then on.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        if tokens_match(_bearer(headers), self.token) or tokens_match(_cookie(headers), self.token):
            return await self.app(scope, receive, send)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == TOKEN_PARAM), None)
        if tokens_match(from_query, self.token):
            if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
                return await self._set_cookie(scope, query, send)
            return await self.app(scope, receive, send)
        log.info("refused %s %s: no valid token", scope.get("method", "WS"), scope.get("path"))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        await send_json(send, 401, UNAUTHORIZED_MESSAGE, [(b"www-authenticate", b"Bearer")])
        return None

    async def _set_cookie(self, scope: Scope, query: list[tuple[str, str]], send: Send) -> None:
        rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{COOKIE_NAME}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        headers = [
            (b"location", location.encode("latin-1")),
            (b"set-cookie", cookie.encode("latin-1")),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by header and while streaming.

    The declared Content-Length is checked before anything is read; a chunked body is counted as
    it arrives and cut off once it passes the limit, so no route ever buffers more than that.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _headers(scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await send_json(send, 413, self.message())
        seen = 0
        state = {"started": False, "refused": False}

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now and tell the route the client left; whatever it sends later
                    # is dropped. Raising instead would surface as a 500 from Starlette.
                    if not state["started"]:
                        state["refused"] = True
                        await send_json(send, 413, self.message())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def message(self) -> str:
        return f"The request body is larger than {self.max_bytes:,} bytes; send a smaller image."

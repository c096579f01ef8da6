"""ASGI middleware of the worker's API: request metrics, bearer-token auth, body size limit (the
control API's; the ``/v1`` router streams and bounds its own bodies).

Plain ASGI (no response buffering), so streamed answers such as the watch stream pass through.
Order, outermost first: metrics (counts every answer, 401 and 413 included), auth (before any
body is read), body limit.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from berth.worker.metrics import WorkerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value
    return None


class RequestMetrics:
    """Counts requests by route template (never the raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: WorkerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on every path but the open ones."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: frozenset[str] = frozenset({"/health"}),
                 also: Callable[[str, bytes], bool] | None = None) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._open = open_paths
        self._also = also  #: (path, presented token) -> admitted anyway (a scheduler's token on its paths)

    def _allowed(self, scope: Scope) -> bool:
        header = _header(scope, b"authorization") or b""
        scheme, _, value = header.partition(b" ")
        presented = value.strip() if scheme.lower() == b"bearer" else b""
        if hmac.compare_digest(presented, self._token or b""):
            return True
        return bool(presented) and self._also is not None and self._also(scope.get("path", ""), presented)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._token is None or scope.get("path") in self._open:
            await self.app(scope, receive, send)
            return
        if not self._allowed(scope):
            await send_json(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                            [(b"www-authenticate", b'Bearer realm="berth"')])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413, whether declared or streamed (it reads them
    whole first). Paths under a prefix in ``unbuffered`` pass untouched: the app there bounds its
    own bodies as it streams them (the inference router, :mod:`berth.worker.router`)."""

    def __init__(self, app: ASGIApp, limit: int, unbuffered: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.unbuffered = unbuffered

    def _too_large(self) -> str:
        return f"request body is larger than {self.limit} bytes (max_body_bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.unbuffered):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await send_json(send, 413 if declared.isdigit() else 400, self._too_large()
                            if declared.isdigit() else "Content-Length is not a number")
            return
        messages = await self._read(receive)
        if messages is None:
            await send_json(send, 413, self._too_large())
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.limit:
                return None
            if not message.get("more_body"):
                return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed

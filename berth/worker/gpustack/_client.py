"""The few calls a worker makes to a GPUStack 2.3 server (``/v2``), over one async HTTP client.

A server that cannot be reached, times out or answers 5xx raises :class:`ServerUnavailable`
(the agent retries with back-off); any other error answer raises :class:`ServerRefused` with
GPUStack's own message. GPUStack updates objects with ``PUT`` of the whole object (it has no
``PATCH``), so :meth:`GPUStackClient.update` reads, changes and writes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from berth.utils.backoff import Backoff

logger = logging.getLogger(__name__)


class ServerUnavailable(Exception):
    """The server is down, unreachable or answered 5xx: retry later."""


class ServerRefused(Exception):
    """The server answered 4xx; ``status`` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: GPUStack's retries spread by +-20 % so a cluster's workers do not all call back at once.
JITTER = (0.8, 1.2)


def server_backoff(initial: float = 1.0, maximum: float = 30.0) -> Backoff:
    """The one back-off rule (:mod:`berth.utils.backoff`) with the jitter retries to a server want."""
    return Backoff(initial=initial, maximum=maximum, jitter=JITTER)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:300]
    return str(body)[:300]


class GPUStackClient:
    """Calls to ``<server>/v2`` with a bearer token that may change (registration, then the worker's)."""

    def __init__(self, server_url: str, *, timeout: float = 30.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.token: str | None = None
        self._http = httpx.AsyncClient(base_url=f"{self.server_url}/v2", timeout=timeout, trust_env=False)

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                   token: str | None = None) -> Any:
        """One request; the decoded JSON answer (None when empty)."""
        try:
            response = await self._http.request(method, path, json=body, params=params, headers=self._headers(token))
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: {response.status_code} {_message(response)}")
        if response.status_code >= 400:
            raise ServerRefused(response.status_code, f"{method} {path}: {response.status_code} {_message(response)}")
        return response.json() if response.content else None

    async def update(self, kind: str, object_id: int, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Any:
        """``GET`` the object, apply ``change`` (returning None means nothing to write), ``PUT`` it back."""
        current = await self.call("GET", f"/{kind}/{object_id}")
        changed = change(dict(current))
        if changed is None:
            return current
        return await self.call("PUT", f"/{kind}/{object_id}", body=changed)

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/{kind}", params={"page": -1})
        return list((answer or {}).get("items") or [])

    async def watch(self, kind: str) -> AsyncIterator[dict[str, Any]]:
        """Events of ``GET /v2/<kind>?watch=true`` as dicts (``type``: 1 created, 2 updated, 3 deleted,
        5 heartbeat). Ends by raising :class:`ServerUnavailable` when the stream breaks or is silent 60 s."""
        timeout = httpx.Timeout(connect=10.0, read=60.0, write=10.0, pool=10.0)
        try:
            async with self._http.stream("GET", f"/{kind}", params={"watch": "true"}, headers=self._headers(None),
                                         timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = ServerUnavailable if response.status_code >= 500 else ServerRefused
                    message = f"watch {kind}: {response.status_code} {_message(response)}"
                    raise error(message) if error is ServerUnavailable else ServerRefused(response.status_code, message)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"watch {kind}: {type(exc).__name__}: {exc}") from None
        raise ServerUnavailable(f"watch {kind}: the server closed the stream")

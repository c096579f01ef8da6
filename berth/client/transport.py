"""HTTP for the client: one pooled ``aiohttp`` session, JSON via ``orjson``, retries, timeouts.

``aiohttp`` was chosen by measurement (issue 6): on this 2-core machine ``httpx.AsyncClient``
and the SDK's ``AsyncOpenAI`` fell behind even a sequential ``openai`` SDK at 32-64 requests in
flight, while one shared ``aiohttp`` session reached about 11x it. Responses are decoded into
plain dicts and lists; nothing is validated per response.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from berth.client.errors import ClientError, RequestTimeout, ServerError, ServerUnavailable
from berth.utils.backoff import Backoff

__all__ = ["Endpoint", "Transport", "normalize_base_url", "pick_model"]

_JSON = "application/json"
_JSON_HEADERS = {"Content-Type": _JSON}
#: Cap on one back-off pause between retries, in seconds.
MAX_BACKOFF = 5.0
#: Each pause is the back-off delay times a random factor in this range, so that many requests
#: failing together do not all retry at once.
JITTER = (0.5, 1.0)


def normalize_base_url(base_url: str) -> str:
    """``http://h:8000/v1/`` -> ``http://h:8000``; raises ClientError for anything not http(s)."""
    text = base_url.strip().rstrip("/")
    if text.endswith("/v1"):
        text = text[: -len("/v1")]
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(
            f"base_url {base_url!r} is not an http(s) URL; give e.g. 'http://127.0.0.1:8000'"
        )
    return text


class Endpoint:
    """One server: its URLs, its model name and the work it has in flight.

``kind`` is ``openai`` (vLLM's OpenAI-compatible API) or ``batched`` (gserve's ``/generate``
and ``/chat``, :mod:`berth.client.batched_server`; it has no model name to resolve).

    ``concurrency`` bounds the requests in flight to it; ``outstanding`` counts the sequences
    (prompts x choices) currently sent and not yet answered, which is how work is spread.
    """

    def __init__(self, base_url: str, *, model: str | None = None, concurrency: int = 64,
                 kind: str = "openai") -> None:
        if concurrency < 1:
            raise ClientError(f"max_concurrency must be at least 1, got {concurrency}")
        if kind not in ("openai", "batched"):
            raise ClientError(f"server kind {kind!r} is not 'openai' or 'batched'")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.kind = kind
        self.concurrency = concurrency
        self.outstanding = 0
        self.answered = 0
        self.down = False
        self.chat_url = f"{self.base_url}/v1/chat/completions"
        self.completions_url = f"{self.base_url}/v1/completions"
        self.models_url = f"{self.base_url}/v1/models"
        self.health_url = f"{self.base_url}/health"
        self.generate_url = f"{self.base_url}/generate"
        self.batched_chat_url = f"{self.base_url}/chat"
        self._model_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, model={self.model!r}, outstanding={self.outstanding})"

    def slots(self) -> asyncio.Semaphore:
        """The semaphore bounding requests in flight to this endpoint, across batches."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    async def resolve_model(self, transport: Transport) -> str:
        """The served model name: as given, else read from ``/v1/models`` (see
        :func:`pick_model`). A batched server serves one model and needs no name: its
        ``/health`` is checked instead."""
        if self.model is not None:
            return self.model
        if self.kind == "batched":
            await transport.get(self.health_url)
            self.model = ""
            return self.model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if self.model is None:
                self.model = pick_model(await transport.get(self.models_url), self.models_url)
        return self.model


def pick_model(body: Any, url: str) -> str:
    """The model to request from a ``/v1/models`` answer: the LoRA adapter when the server
    serves exactly one (vLLM lists the base model first, adapters with a ``parent``), as
    gserve applies its adapter to every request; else the first model listed."""
    try:
        cards = list(body["data"])
        first = str(cards[0]["id"])
    except (KeyError, IndexError, TypeError):
        raise ClientError(
            f"{url} lists no model; pass model= to the client, or check the server"
        ) from None
    adapters = [card for card in cards if isinstance(card, dict) and card.get("parent")]
    return str(adapters[0]["id"]) if len(adapters) == 1 else first


class Transport:
    """A pooled ``aiohttp`` session made on first use, on the loop that first uses it.

    Connection errors (refused, reset, disconnected) are retried ``max_retries`` times with
    exponential back-off from ``backoff`` seconds (doubling, capped at :data:`MAX_BACKOFF`, times
    a random factor in :data:`JITTER`: :class:`berth.utils.backoff.Backoff`); a request slower than ``timeout`` seconds
    raises :class:`RequestTimeout` and is not retried; an HTTP error status raises
    :class:`ServerError` with the server's message.
    """

    def __init__(
        self,
        *,
        timeout: float | None = 30.0,
        max_retries: int = 3,
        backoff: float = 0.1,
        limit: int = 0,
        api_key: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ClientError(f"max_retries must be 0 or more, got {max_retries}")
        if backoff < 0:
            raise ClientError(f"retry_backoff must be 0 or more, got {backoff}")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._pauses = Backoff(backoff, MAX_BACKOFF, jitter=JITTER)
        self._limit = limit
        self._headers = dict(_JSON_HEADERS)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the api key
        return f"Transport(timeout={self.timeout}, max_retries={self.max_retries})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers=self._headers,
            )
        return self._session

    async def get(self, url: str) -> Any:
        """GET ``url`` and decode its JSON body."""
        return orjson.loads(await self._with_retries("GET", url, None))

    async def post(self, url: str, payload: Any) -> Any:
        """POST ``payload`` as JSON to ``url`` and decode the JSON answer."""
        return orjson.loads(await self._with_retries("POST", url, orjson.dumps(payload)))

    async def post_bytes(self, url: str, body: bytes) -> bytes:
        """POST an encoded JSON ``body`` to ``url``; the answer's raw bytes."""
        return await self._with_retries("POST", url, body)

    async def status(self, url: str) -> int:
        """HTTP status of one GET of ``url`` (no retries); raises ServerUnavailable if unreachable."""
        try:
            async with self._client().get(url) as response:
                await response.read()
                return response.status
        except TimeoutError as exc:
            raise RequestTimeout(f"GET {url} took longer than {self.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(f"GET {url} failed: {exc}") from exc

    async def _with_retries(self, method: str, url: str, body: bytes | None) -> bytes:
        attempt = 0
        while True:
            try:
                return await self._once(method, url, body)
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"{method} {url} took longer than the client timeout of {self.timeout} s; "
                    "raise timeout= (ServeConfig.client_timeout) for long generations"
                ) from exc
            except aiohttp.ClientConnectionError as exc:
                if attempt >= self.max_retries:
                    raise ServerUnavailable(
                        f"{method} {url} failed after {attempt + 1} attempt(s): {exc}; is the "
                        "server running?"
                    ) from exc
            await asyncio.sleep(self._pause(attempt))
            attempt += 1

    def _pause(self, attempt: int) -> float:
        return self._pauses.delay(attempt)

    async def _once(self, method: str, url: str, body: bytes | None) -> bytes:
        # a ready payload skips aiohttp's per-request payload-type lookup
        data = None if body is None else aiohttp.BytesPayload(body, content_type=_JSON)
        async with self._client().request(method, url, data=data) as response:
            raw = await response.read()
            if response.status >= 400:
                raise ServerError(url, response.status, _error_message(raw))
            return raw

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _error_message(raw: bytes) -> str:
    """vLLM's error text from ``{"error": {"message": ...}}`` or ``{"message": ...}``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode(errors="replace").strip() or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return raw[:500].decode(errors="replace")

"""``VLLMClient``: batched chat and generate against one OpenAI-compatible vLLM server."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from berth.client.batch import BatchSender
from berth.client.errors import ClientError
from berth.client.transport import Endpoint, Transport

__all__ = ["VLLMClient", "http_url"]


def http_url(host: str, port: int) -> str:
    """``http://host:port``, with IPv6 hosts bracketed."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


class VLLMClient(BatchSender):
    """A client of one server, given as ``host``/``port`` or ``base_url`` (positional
    arguments are gserve's: ``host, port, timeout``).

    ``kind`` is the server's API: ``openai`` (vLLM's OpenAI-compatible server) or ``batched``
    (gserve's ``/generate`` and ``/chat``, :mod:`berth.client.batched_server`). ``model`` is the
    served model (or LoRA adapter) name to request; when absent it is read from ``/v1/models``
    on first use (the adapter, when the server serves exactly one). Up to ``max_concurrency`` requests are in flight at once
    over one pooled connection set; each may take ``timeout`` seconds; connection errors are
    retried ``max_retries`` times with back-off from ``retry_backoff`` seconds. ``api_key`` is
    sent as a bearer token (for servers started with ``--api-key``) and never shown.
    Constructing a client does no I/O; :meth:`close` (or a ``with`` block) releases it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        timeout: float | None = 30.0,
        *,
        base_url: str | None = None,
        model: str | None = None,
        kind: str = "openai",
        max_concurrency: int = 64,
        max_retries: int = 3,
        retry_backoff: float = 0.1,
        max_prompts_per_request: int = 256,
        api_key: str | None = None,
    ) -> None:
        url = base_url if base_url is not None else http_url(host, port)
        self.endpoint = Endpoint(url, model=model, concurrency=max_concurrency, kind=kind)
        self._transport = Transport(
            timeout=timeout, max_retries=max_retries, backoff=retry_backoff, api_key=api_key
        )
        self.max_prompts_per_request = max_prompts_per_request

    def __repr__(self) -> str:
        return f"VLLMClient(base_url={self.base_url!r}, model={self.endpoint.model!r})"

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def model(self) -> str | None:
        """The model name requests use (``None`` until discovered)."""
        return self.endpoint.model

    def _batch_endpoints(self) -> list[Endpoint]:
        return [self.endpoint]

    def models(self) -> list[str]:
        """Names the server serves (``/v1/models``): the model and any LoRA adapters."""
        body: Any = self._loop().run(self._transport.get(self.endpoint.models_url))
        return [str(item["id"]) for item in body.get("data", [])]

    def is_healthy(self) -> bool:
        """True when ``/health`` answers 200 right now (no retries)."""
        try:
            return self._loop().run(self._transport.status(self.endpoint.health_url)) == 200
        except ClientError:
            return False

    def close(self) -> None:
        """Close pooled connections and release the background loop. Safe to call twice."""
        self._release_loop()

    def __enter__(self) -> VLLMClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self._background_loop is not None:
            await self._background_loop.run_async(self._transport.close())
        self._release_loop()

    async def __aenter__(self) -> VLLMClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

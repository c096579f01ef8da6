"""The one HTTP client from the worker to its engines (and a Ray leader's dashboard).

One pooled ``httpx.Client`` per worker: made in ``ServeManager.start``, closed in ``close``,
shared through the ``WorkerContext`` by the watcher (readiness, Ray joins, LoRA adapters
re-applied), the LoRA operations and swap (sleep, wake, requests in flight). Every request has a
bounded timeout: ``timeout`` (the settings' ``probe_timeout``) for questions, ``lora_timeout``
for loading an adapter, ``long_timeout`` for sleeping and waking (level 2 reloads weights).
Proxies from the environment are ignored: every address is an engine of this host (or a Ray
head it runs). Thread-safe: httpx's pool is; the client itself is made and closed under a lock
and never held while a request runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from berth.utils.readiness import probe_ready
from berth.worker.engine._loras import adapter_ids, lora_refusal, unreachable
from berth.worker.engine._ray import joined_nodes
from berth.worker.engine._readiness import Readiness
from berth.worker.engine._sleep import (
    EngineError,
    describe,
    in_flight_count,
    sleep_refusal,
)

_BODY_LIMIT = 1 << 20


class EngineClient:
    """Readiness, runtime LoRA, sleep and wake, load, and Ray joins, over one pooled client."""

    def __init__(self, *, timeout: float = 2.0, lora_timeout: float = 120.0, long_timeout: float = 300.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeout = timeout
        self._lora_timeout = httpx.Timeout(lora_timeout, connect=min(5.0, lora_timeout))
        self._long_timeout = httpx.Timeout(long_timeout, connect=min(5.0, long_timeout))
        self._transport = transport
        self._guard = threading.Lock()
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        with self._guard:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(timeout=self.timeout, trust_env=False, transport=self._transport)
            return self._client

    def close(self) -> None:
        """Close the pool (a later call opens a new one)."""
        with self._guard:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- readiness ---------------------------------------------------------------------------

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness:
        """The one readiness rule (:func:`berth.utils.readiness.probe_ready`) over the pool."""
        primary = served_names[0] if served_names else None
        ready, why = probe_ready(base_url, primary, timeout=self.timeout, get=self._get_bytes)
        return Readiness(ready, why)

    def _get_bytes(self, url: str, timeout: float, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            answer = self._http().get(url, timeout=timeout, headers=headers)
        except httpx.HTTPError:
            return 0, b""
        return answer.status_code, answer.content[:_BODY_LIMIT]

    # -- runtime LoRA adapters ---------------------------------------------------------------

    def loaded_loras(self, base_url: str) -> set[str]:
        """Adapter names the engine lists in ``/v1/models``; :class:`EngineRefused` (502) if it cannot say."""
        status, body = self._get_bytes(f"{base_url}/v1/models", self.timeout)
        names = adapter_ids(body) if status == 200 else None
        if names is None:
            raise unreachable("list its adapters", f"/v1/models answered {status}" if status else "no answer")
        return names

    def load_lora(self, base_url: str, name: str, path: str) -> None:
        self._lora_post(base_url, "load_lora_adapter", {"lora_name": name, "lora_path": path}, f"load adapter {name!r}")

    def unload_lora(self, base_url: str, name: str) -> None:
        self._lora_post(base_url, "unload_lora_adapter", {"lora_name": name}, f"unload adapter {name!r}")

    def _lora_post(self, base_url: str, operation: str, body: dict[str, str], what: str) -> None:
        try:
            answer = self._http().post(f"{base_url}/v1/{operation}", json=body, timeout=self._lora_timeout)
        except httpx.HTTPError as exc:
            raise unreachable(what, type(exc).__name__) from None
        if answer.status_code != 200:
            raise lora_refusal(answer, operation, what)

    # -- sleep mode and load -----------------------------------------------------------------

    def sleep(self, base_url: str, level: int) -> None:
        self._dev_post(f"{base_url}/sleep", f"sleep (level {level})", params={"level": str(level)})

    def wake(self, base_url: str, level: int = 1) -> None:
        """Wake an engine put to sleep at ``level``. Level 2 discarded the weights: they are woken
        first, reloaded from the model's files, then the KV cache (vLLM's order, no memory peak)."""
        if level < 2:
            self._dev_post(f"{base_url}/wake_up", "wake up")
            return
        self._dev_post(f"{base_url}/wake_up", "wake up (weights)", params={"tags": "weights"})
        self._dev_post(f"{base_url}/collective_rpc", "reload weights", json={"method": "reload_weights"})
        self._dev_post(f"{base_url}/wake_up", "wake up (KV cache)", params={"tags": "kv_cache"})

    def is_sleeping(self, base_url: str) -> bool:
        try:
            reply = self._http().get(f"{base_url}/is_sleeping", timeout=self.timeout)
            reply.raise_for_status()
            return bool(reply.json()["is_sleeping"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"GET /is_sleeping failed: {describe(exc)}") from exc

    def in_flight(self, base_url: str) -> int | None:
        """Requests running or waiting in the engine; None when its metrics cannot be read."""
        try:
            reply = self._http().get(f"{base_url}/metrics", timeout=self.timeout)
        except httpx.HTTPError:
            return None
        return in_flight_count(reply.text) if reply.status_code == 200 else None

    def _dev_post(self, url: str, what: str, *, params: dict[str, str] | None = None,
                  json: dict[str, Any] | None = None) -> None:
        try:
            reply = self._http().post(url, params=params or {}, json=json, timeout=self._long_timeout)
        except httpx.HTTPError as exc:
            raise EngineError(f"{what} failed: {describe(exc)}") from exc
        if reply.status_code >= 300:
            raise sleep_refusal(reply, what)

    # -- a Ray leader's dashboard ------------------------------------------------------------

    def ray_nodes(self, dashboard: str) -> set[str] | None:
        """Addresses of the alive nodes of a Ray head (``GET /nodes?view=summary``); None when it does not answer."""
        status, body = self._get_bytes(f"{dashboard}/nodes?view=summary", self.timeout)
        try:
            return joined_nodes(json.loads(body)) if status == 200 else None
        except ValueError:
            return None


class ReadinessProbe(EngineClient):
    """A readiness checker with a pool of its own (for code that checks engines without a worker)."""

    def __init__(self, timeout: float = 2.0) -> None:
        super().__init__(timeout=timeout)

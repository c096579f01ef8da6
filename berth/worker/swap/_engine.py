"""Talking to a running vLLM engine about sleep and load: vLLM's development endpoints
(``VLLM_SERVER_DEV_MODE=1`` with ``--enable-sleep-mode``) and its Prometheus gauges.

* ``POST /sleep?level=1|2``: level 1 moves the weights to host memory and drops the KV cache;
  level 2 drops both. ``POST /wake_up`` brings them back (after level 2 the weights are reloaded
  from the model's files with ``POST /collective_rpc`` ``reload_weights``); ``GET /is_sleeping``.
* ``GET /metrics``: ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` tell whether
  requests are still in flight, so an engine is never stopped or put to sleep under them.

Only loopback engines of this worker are addressed; proxies from the environment are ignored.
"""

from __future__ import annotations

import re

import httpx


_IN_FLIGHT = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


class EngineError(Exception):
    """The engine did not do what was asked (the message says what it answered)."""


class EngineControl:
    """Sleep, wake and load questions over one pooled HTTP client. Thread-safe."""

    def __init__(self, *, timeout: float = 300.0, probe_timeout: float = 2.0) -> None:
        self._timeout = timeout
        self._client = httpx.Client(timeout=timeout, trust_env=False)
        self._probe_timeout = probe_timeout

    def open(self) -> None:
        """Make a closed control usable again (a controller started by a new lifespan)."""
        if self._client.is_closed:
            self._client = httpx.Client(timeout=self._timeout, trust_env=False)

    def sleep(self, base_url: str, level: int) -> None:
        self._post(f"{base_url}/sleep", params={"level": str(level)}, what=f"sleep (level {level})")

    def wake(self, base_url: str, level: int = 1) -> None:
        """Wake an engine put to sleep at ``level``. Level 2 discarded the weights: they are woken
        first, reloaded from the model's files, then the KV cache (vLLM's order, no memory peak)."""
        if level < 2:
            self._post(f"{base_url}/wake_up", params={}, what="wake up")
            return
        self._post(f"{base_url}/wake_up", params={"tags": "weights"}, what="wake up (weights)")
        self._post(f"{base_url}/collective_rpc", params={}, json={"method": "reload_weights"}, what="reload weights")
        self._post(f"{base_url}/wake_up", params={"tags": "kv_cache"}, what="wake up (KV cache)")

    def is_sleeping(self, base_url: str) -> bool:
        try:
            reply = self._client.get(f"{base_url}/is_sleeping", timeout=self._probe_timeout)
            reply.raise_for_status()
            return bool(reply.json()["is_sleeping"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"GET /is_sleeping failed: {_describe(exc)}") from exc

    def in_flight(self, base_url: str) -> int | None:
        """Requests running or waiting in the engine; None when its metrics cannot be read."""
        try:
            reply = self._client.get(f"{base_url}/metrics", timeout=self._probe_timeout)
        except httpx.HTTPError:
            return None
        if reply.status_code != 200:
            return None
        values = _IN_FLIGHT.findall(reply.text)
        return round(sum(float(v) for v in values)) if values else None

    def _post(self, url: str, *, params: dict[str, str], what: str, json: dict[str, str] | None = None) -> None:
        try:
            reply = self._client.post(url, params=params, json=json)
        except httpx.HTTPError as exc:
            raise EngineError(f"{what} failed: {_describe(exc)}") from exc
        if reply.status_code == 404:
            raise EngineError(f"{what}: the engine has no such endpoint (404); it needs --enable-sleep-mode "
                              "and VLLM_SERVER_DEV_MODE=1")
        if reply.status_code >= 300:
            raise EngineError(f"{what}: the engine answered {reply.status_code}: {reply.text[:200]}")

    def close(self) -> None:
        self._client.close()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

"""Is a vLLM instance ready? Only when ``/health`` answers 200 and ``/v1/models`` lists its name.

A server that is alive but still loading answers neither, or answers ``/health`` before its
model is listed; both count as not ready. Proxies from the environment are ignored (the
instances are on this host).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from berth.utils.readiness import NOT_A_MODEL_LIST, model_ids



@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    detail: str = ""
    failed: bool = False  #: never going to be ready (e.g. followers never joined): fail the instance


class Probe(Protocol):
    """What the worker needs from a readiness checker (the fake in :mod:`berth.testing.fakes` too)."""

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness: ...

    def close(self) -> None: ...


class ReadinessProbe:
    """Checks instances over HTTP with one pooled client. Safe to share between threads."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, trust_env=False)
        return self._client

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness:
        try:
            health = self._http().get(f"{base_url}/health")
            if health.status_code != 200:
                return Readiness(False, f"/health answered {health.status_code}")
            models = self._http().get(f"{base_url}/v1/models")
        except httpx.HTTPError as exc:
            return Readiness(False, f"not answering yet ({type(exc).__name__})")
        if models.status_code != 200:
            return Readiness(False, f"/v1/models answered {models.status_code}")
        return self._lists(models, served_names)

    @staticmethod
    def _lists(models: httpx.Response, served_names: Sequence[str]) -> Readiness:
        listed = model_ids(models.content)
        if listed is None:
            return Readiness(False, NOT_A_MODEL_LIST)
        if not served_names or set(served_names) & listed:
            return Readiness(True)
        return Readiness(False, f"/v1/models does not list {served_names[0]!r} yet")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

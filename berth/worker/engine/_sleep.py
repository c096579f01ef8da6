"""vLLM's sleep mode and load gauges, as the engine client reads them.

* ``POST /sleep?level=1|2``: level 1 moves the weights to host memory and drops the KV cache;
  level 2 drops both. ``POST /wake_up`` brings them back (after level 2 the weights are reloaded
  from the model's files with ``POST /collective_rpc`` ``reload_weights``); ``GET /is_sleeping``.
  These are development endpoints: ``VLLM_SERVER_DEV_MODE=1`` with ``--enable-sleep-mode``.
* ``GET /metrics``: ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` tell whether
  requests are still in flight, so an engine is never stopped or put to sleep under them.
"""

from __future__ import annotations

import re

import httpx

_IN_FLIGHT = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


class EngineError(Exception):
    """The engine did not do what was asked (the message says what it answered)."""


def in_flight_count(metrics: str) -> int | None:
    """Requests running or waiting in a Prometheus text; None when it has neither gauge."""
    values = _IN_FLIGHT.findall(metrics)
    return round(sum(float(v) for v in values)) if values else None


def sleep_refusal(reply: httpx.Response, what: str) -> EngineError:
    if reply.status_code == 404:
        return EngineError(f"{what}: the engine has no such endpoint (404); it needs --enable-sleep-mode "
                           "and VLLM_SERVER_DEV_MODE=1")
    return EngineError(f"{what}: the engine answered {reply.status_code}: {reply.text[:200]}")


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

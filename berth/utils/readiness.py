"""Is a vLLM server ready? ``/health`` answers 200 and ``/v1/models`` lists its (primary) served name."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

__all__ = ["NOT_A_MODEL_LIST", "Getter", "http_get", "model_ids", "probe_ready"]

NOT_A_MODEL_LIST = "/v1/models answered something that is not a model list"


#: ``get(url, timeout, token) -> (status, body)``; status 0 when nothing answered.
Getter = Callable[[str, float, "str | None"], "tuple[int, bytes]"]

#: No proxies: a readiness probe talks to the node itself, whatever HTTP_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float, token: str | None = None) -> tuple[int, bytes]:
    """(status, first MiB of the body) of a GET without proxies; status 0 when nothing answered."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def probe_ready(base_url: str, served_name: str | None = None, *, timeout: float = 2.0,
                token: str | None = None, get: Getter = http_get) -> tuple[bool, str]:
    """(ready, why not): the one readiness rule of berth (the CLI, the client and the worker).

    Ready when ``/health`` answers 200 and, when a name is given, ``/v1/models`` lists it (an
    instance's primary served name: vLLM lists all its served names at once). Alive-but-loading
    servers answer ``/health`` late or list no model yet. ``get`` is the transport (plain
    ``urllib`` by default; the worker passes its pooled client's).
    """
    status, _ = get(f"{base_url}/health", timeout, token)
    if status != 200:
        return False, "not answering /health" if status == 0 else f"/health answered {status}"
    if served_name is None:
        return True, ""
    status, body = get(f"{base_url}/v1/models", timeout, token)
    if status != 200:
        return False, "not answering /v1/models" if status == 0 else f"/v1/models answered {status}"
    names = model_ids(body)
    if names is None:
        return False, NOT_A_MODEL_LIST
    return (served_name in names, "" if served_name in names else f"{served_name!r} not listed yet")


def model_ids(body: bytes) -> set[Any] | None:
    """The model ids a ``/v1/models`` answer lists, or ``None`` when it is not a model list."""
    try:
        return {item.get("id") for item in json.loads(body).get("data", [])}
    except (ValueError, AttributeError, TypeError):
        return None

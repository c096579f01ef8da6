"""Finding servers berth did not start here: a berth worker's instance, by id.

The worker's API (``GET /v2/instances/{id}``) is owned by the worker package; this module only
reads the instance's address from its JSON: ``base_url`` when present, else ``readiness_url``
without its path (``http://10.0.0.5:40000/health`` -> ``http://10.0.0.5:40000``), looked up at
the top level and under ``status`` and ``plan``. Keep it in step with that API.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from berth.client.errors import ClientError, ServerUnavailable
from berth.client.transport import normalize_base_url

__all__ = ["base_url_from_instance", "instance_base_url"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def instance_base_url(worker_url: str, instance_id: str | int, timeout: float = 10.0,
                      token: str | None = None) -> str:
    """The OpenAI-compatible base URL of instance ``instance_id`` managed by the worker.

    ``token`` is the worker's API token, sent as ``Authorization: Bearer`` (never shown).
    """
    url = f"{normalize_base_url(worker_url)}/v2/instances/{urllib.parse.quote(str(instance_id))}"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        hint = ("pass the worker's token (token=...)" if exc.code == 401
                else f"is {instance_id!r} an instance of that worker?")
        raise ClientError(f"GET {url} answered HTTP {exc.code}; {hint}") from exc
    except (OSError, ValueError) as exc:
        raise ServerUnavailable(f"GET {url} failed: {exc}; is the worker running?") from exc
    return base_url_from_instance(body, url)


def base_url_from_instance(body: Any, source: str = "instance") -> str:
    """``base_url``, or ``readiness_url`` without its path, from an instance document."""
    for doc in _documents(body):
        if doc.get("base_url"):
            return normalize_base_url(str(doc["base_url"]))
        if doc.get("readiness_url"):
            parts = urllib.parse.urlsplit(str(doc["readiness_url"]))
            return normalize_base_url(f"{parts.scheme}://{parts.netloc}")
    raise ClientError(
        f"{source} carries neither base_url nor readiness_url; the instance may not be "
        "planned yet (a follower of a distributed instance has no API of its own)"
    )


def _documents(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    nested = [body[key] for key in ("status", "plan") if isinstance(body.get(key), dict)]
    return [body, *nested]

"""Finding servers berth did not start here: a berth worker's instance, by id.

The worker's API (``GET /v2/instances/{id}``) is owned by the worker package and read through
:class:`berth.utils.worker_api.WorkerAPI` (the CLI's and the demo's client too); this module only
reads the instance's address from its JSON: ``base_url`` when present, else ``readiness_url``
without its path (``http://10.0.0.5:40000/health`` -> ``http://10.0.0.5:40000``), looked up at
the top level and under ``status`` and ``plan``. Keep it in step with that API.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from berth.client.errors import ClientError, ServerUnavailable
from berth.client.transport import normalize_base_url
from berth.utils.worker_api import WorkerAPI, WorkerAPIError, WorkerUnreachable

__all__ = ["base_url_from_instance", "instance_base_url"]


def instance_base_url(worker_url: str, instance_id: str | int, timeout: float = 10.0,
                      token: str | None = None) -> str:
    """The OpenAI-compatible base URL of instance ``instance_id`` managed by the worker.

    ``token`` is the worker's API token, sent as ``Authorization: Bearer`` (never shown).
    """
    api = WorkerAPI(normalize_base_url(worker_url), token, timeout,
                    token_hint="pass the worker's token (token=...)", unreachable_hint="is the worker running?")
    try:
        body = api.instance(instance_id)
    except WorkerUnreachable as exc:
        raise ServerUnavailable(str(exc)) from exc
    except WorkerAPIError as exc:
        hint = f"; is {instance_id!r} an instance of that worker?" if exc.status == 404 else ""
        raise ClientError(f"{exc}{hint}") from exc
    url = f"{api.url}/v2/instances/{instance_id}"
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

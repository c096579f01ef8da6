"""Is a server ready? ``/health`` answers 200 AND ``/v1/models`` lists the model to request.

vLLM answers ``/health`` as soon as its API is up; the model list is checked too so that a
server is only called ready when a request for the expected model (or LoRA adapter) can work.
A batched server opens its port only once its model is loaded: ``/health`` answering
``{"status": "ok"}`` is enough.
Plain ``urllib`` (:mod:`berth.utils.readiness`) on purpose: probing needs no event loop and no
pooled session.
"""

from __future__ import annotations

import json

from berth.utils.readiness import http_get, probe_ready


PROBE_TIMEOUT = 2.0


def is_ready(base_url: str, model: str, timeout: float = PROBE_TIMEOUT, *,
             kind: str = "openai") -> bool:
    """True when the server is healthy and (an OpenAI server) serves ``model``."""
    if kind != "batched":
        return probe_ready(base_url, model, timeout=timeout)[0]
    status, body = http_get(f"{base_url}/health", timeout)
    try:
        return status == 200 and json.loads(body or b"null") == {"status": "ok"}
    except ValueError:
        return False

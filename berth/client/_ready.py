"""Is a server ready? ``/health`` answers 200 AND ``/v1/models`` lists the model to request.

vLLM answers ``/health`` as soon as its API is up; the model list is checked too so that a
server is only called ready when a request for the expected model (or LoRA adapter) can work.
A batched server opens its port only once its model is loaded: ``/health`` answering
``{"status": "ok"}`` is enough.
Plain ``urllib`` on purpose: probing needs no event loop and no pooled session.
"""

from __future__ import annotations

import json
import urllib.request


PROBE_TIMEOUT = 2.0
#: No proxies: probes go straight to the server, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def served_models(base_url: str, timeout: float = PROBE_TIMEOUT) -> list[str]:
    """The ids ``/v1/models`` lists; raises OSError (URLError included) when unreachable."""
    with _OPENER.open(f"{base_url}/v1/models", timeout=timeout) as response:
        body = json.loads(response.read())
    return [str(item.get("id")) for item in body.get("data", [])]


def is_ready(base_url: str, model: str, timeout: float = PROBE_TIMEOUT, *,
             kind: str = "openai") -> bool:
    """True when the server is healthy and (an OpenAI server) serves ``model``."""
    try:
        with _OPENER.open(f"{base_url}/health", timeout=timeout) as response:
            if response.status != 200:
                return False
            body = response.read()
        if kind == "batched":
            return json.loads(body or b"null") == {"status": "ok"}
        return model in served_models(base_url, timeout)
    except (OSError, ValueError):
        return False

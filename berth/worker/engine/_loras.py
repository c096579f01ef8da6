"""vLLM's runtime LoRA endpoints (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``): what
their answers mean, for the engine client."""

from __future__ import annotations

import json

import httpx

from berth.worker.loras import RUNTIME_ENV, EngineRefused


def adapter_ids(body: bytes) -> set[str] | None:
    """Adapter names in a ``/v1/models`` answer (entries with a ``parent``); None if it is not a model list."""
    try:
        data = json.loads(body).get("data", [])
        return {str(m["id"]) for m in data if isinstance(m, dict) and m.get("parent") and m.get("id")}
    except (ValueError, AttributeError, TypeError):
        return None


def unreachable(what: str, why: str) -> EngineRefused:
    return EngineRefused(f"the engine did not answer ({why}); cannot {what}", 502)


def lora_refusal(answer: httpx.Response, operation: str, what: str) -> EngineRefused:
    """The error for an engine's non-200 answer; its status says whose fault it is."""
    status, message = answer.status_code, _engine_message(answer)
    if message == "Not Found":  # the route itself: the engine has no runtime LoRA endpoints
        return EngineRefused(f"the engine has no /v1/{operation}: it must run with --enable-lora and "
                             f"{RUNTIME_ENV}=1; cannot {what}", 409)
    return EngineRefused(f"the engine refused to {what}: {message}", status if status in (400, 404, 409) else 502)


def _engine_message(answer: httpx.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return answer.text[:300] or f"HTTP {answer.status_code}"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(data, dict) and data.get("detail"):
        return str(data["detail"])[:300]
    return f"HTTP {answer.status_code}"

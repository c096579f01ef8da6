"""vLLM's runtime LoRA endpoints of one engine (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``)."""

from __future__ import annotations

import httpx

from berth.worker.loras import RUNTIME_ENV, EngineRefused


_ENGINE_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class EngineLoras:
    """vLLM's runtime LoRA endpoints of one engine, over HTTP (loopback)."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(timeout=_ENGINE_TIMEOUT, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def loaded(self, base_url: str) -> set[str]:
        """Adapter names the engine lists in ``/v1/models`` (entries with a ``parent``)."""
        answer = self._client.get(f"{base_url}/v1/models")
        answer.raise_for_status()
        return {m["id"] for m in answer.json().get("data", []) if isinstance(m, dict) and m.get("parent")}

    def load(self, base_url: str, name: str, path: str) -> None:
        self._post(base_url, "load_lora_adapter", {"lora_name": name, "lora_path": path}, f"load adapter {name!r}")

    def unload(self, base_url: str, name: str) -> None:
        self._post(base_url, "unload_lora_adapter", {"lora_name": name}, f"unload adapter {name!r}")

    def _post(self, base_url: str, operation: str, body: dict[str, str], what: str) -> None:
        try:
            answer = self._client.post(f"{base_url}/v1/{operation}", json=body)
        except httpx.HTTPError as exc:
            raise EngineRefused(f"the engine did not answer ({type(exc).__name__}); cannot {what}", 502) from None
        if answer.status_code == 200:
            return
        status, message = answer.status_code, _engine_message(answer)
        if message == "Not Found":  # the route itself: the engine has no runtime LoRA endpoints
            raise EngineRefused(f"the engine has no /v1/{operation}: it must run with --enable-lora and "
                                f"{RUNTIME_ENV}=1; cannot {what}", 409)
        raise EngineRefused(f"the engine refused to {what}: {message}", status if status in (400, 404, 409) else 502)


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



"""LoRA adapters loaded into a running vLLM instance at run time.

vLLM loads and unloads adapters while it serves when started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter``). An instance asks for that with those two in its own spec: the flag
in its arguments (with ``--max-loras`` and ``--max-lora-rank`` suited to the adapters), the
variable in its env. berth adds nothing to the command line on its own.

What an instance has loaded is kept in its durable record (``endpoints["loras"]``, a list of
``{"name", "path"}``), so that the router finds an adapter's base instance by the adapter's name,
and so that the adapters are loaded again when the engine comes back: after a restart, and after
the worker itself restarted and re-adopted the instance (:class:`LoraKeeper`, run by the watcher).

Adapter names and paths are user input: a name is a short token (it becomes a model name and a
URL segment), a path an absolute directory on this worker holding ``adapter_config.json``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from berth.utils.args import flatten_to_argv
from berth.worker._context import WorkerContext
from berth.worker.errors import InstanceConflict, InvalidRequest, WorkerError
from berth.worker.registry import InstanceRecord
from berth.worker.states import InstanceState

__all__ = [
    "RUNTIME_ENV",
    "EngineLoras",
    "EngineRefused",
    "LoraKeeper",
    "LoraLoad",
    "check_lora_name",
    "check_lora_path",
    "runtime_lora_names",
    "runtime_loras",
    "runtime_refusal",
    "serving",
    "taken_by",
    "with_lora",
    "without_lora",
]

logger = logging.getLogger(__name__)

#: The engine variable that enables vLLM's load/unload endpoints.
RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
#: The key of the record's ``endpoints`` that lists runtime-loaded adapters.
RECORD_KEY = "loras"
MAX_NAME = 128
MAX_PATH = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ADAPTER_CONFIG = "adapter_config.json"
_ENGINE_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class LoraLoad(BaseModel):
    """The body of a load request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, description=(
        "The adapter's name: requests use it as their `model`. Letters, digits, `.`, `_`, `-`; "
        "starts with a letter or digit."))
    path: str = Field(min_length=1, max_length=MAX_PATH, description=(
        "Absolute path of the adapter's directory on this worker (holding adapter_config.json and "
        "its weights), as the engine sees it."))


class EngineRefused(WorkerError):
    """The engine answered a load or unload with an error; the status says whose fault it is."""

    def __init__(self, detail: str, status_code: int) -> None:
        super().__init__(detail)
        self.status_code = status_code


# -- checks ----------------------------------------------------------------------------------


def check_lora_name(name: str, field: str = "name") -> str:
    if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidRequest(f"{field}: {name[:60]!r} is not a valid adapter name: 1 to {MAX_NAME} letters, "
                             "digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_lora_path(path: str, field: str = "path") -> str:
    """The adapter directory, symlinks resolved; :class:`InvalidRequest` naming what is wrong."""
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise InvalidRequest(f"{field}: must not contain control characters")
    if not os.path.isabs(path):
        raise InvalidRequest(f"{field}: {path[:120]!r} is not absolute; give the adapter directory's full path")
    if ".." in Path(path).parts:
        raise InvalidRequest(f"{field}: must not contain '..' components")
    resolved = Path(os.path.realpath(path))
    if not resolved.is_dir():
        raise InvalidRequest(f"{field}: {path[:120]!r} is not a directory on this worker")
    if not (resolved / _ADAPTER_CONFIG).is_file():
        raise InvalidRequest(f"{field}: {path[:120]!r} holds no {_ADAPTER_CONFIG}; point it at a PEFT LoRA adapter directory")
    return str(resolved)


def _argv(spec: Mapping[str, Any]) -> list[str]:
    try:
        return flatten_to_argv((spec.get("model") or {}).get("backend_parameters") or [])
    except ValueError:
        return []


def runtime_refusal(spec: Mapping[str, Any]) -> str | None:
    """Why the instance of ``spec`` cannot load adapters at run time; None when it can."""
    missing = []
    if not any(token == "--enable-lora" or token.startswith("--enable-lora=") for token in _argv(spec)):
        missing.append("--enable-lora in its arguments")
    env = (spec.get("model") or {}).get("env") or {}
    if str(env.get(RUNTIME_ENV, "")).strip().lower() not in ("1", "true"):
        missing.append(f"{RUNTIME_ENV}=1 in its env")
    if not missing:
        return None
    return f"the instance was not started for runtime LoRA: it needs {' and '.join(missing)} (see docs/lora.md)"


# -- the record ------------------------------------------------------------------------------


def runtime_loras(record: InstanceRecord) -> list[dict[str, str]]:
    """The adapters loaded at run time, in load order: ``[{"name", "path"}, ...]``."""
    entries = record.endpoints.get(RECORD_KEY) or []
    return [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str) and isinstance(e.get("path"), str)]


def runtime_lora_names(record: InstanceRecord) -> list[str]:
    return [entry["name"] for entry in runtime_loras(record)]


def with_lora(record: InstanceRecord, name: str, path: str) -> dict[str, Any]:
    """The record's endpoints with ``name`` (re)pointed at ``path``."""
    kept = [e for e in runtime_loras(record) if e["name"] != name]
    return {**record.endpoints, RECORD_KEY: [*kept, {"name": name, "path": path}]}


def without_lora(record: InstanceRecord, name: str) -> dict[str, Any]:
    return {**record.endpoints, RECORD_KEY: [e for e in runtime_loras(record) if e["name"] != name]}


def taken_by(records: Iterable[InstanceRecord], name: str,
             names_of: Callable[[InstanceRecord], Iterable[str]]) -> InstanceRecord | None:
    """The first record that already answers to ``name`` (``names_of(record)`` lists its names)."""
    return next((r for r in records if not r.state.terminal and name in names_of(r)), None)


# -- the engine ------------------------------------------------------------------------------


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


def serving(record: InstanceRecord) -> str:
    """The base URL of a running instance; 409 naming its state otherwise."""
    base_url = record.endpoints.get("base_url")
    if record.state is not InstanceState.RUNNING or not base_url:
        raise InstanceConflict(f"instance {record.id!r} is {record.state.value}, not serving: load adapters once it is running")
    return str(base_url)


# -- re-applying -----------------------------------------------------------------------------


class LoraKeeper:
    """Loads a running instance's recorded adapters into its engine once per engine start.

    The watcher calls :meth:`ensure` for every running instance on each tick; an engine is
    checked once per ``(instance, started_at)``, so both a restarted engine and one re-adopted by a
    new worker process (which knows no engine yet) get their adapters back. An engine that
    cannot be asked, or refuses, is retried on the next tick.
    """

    def __init__(self, ctx: WorkerContext, engine: EngineLoras | None = None) -> None:
        self.ctx = ctx
        self.engine = engine or EngineLoras()
        self._done: dict[str, float | None] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        self.engine.close()

    def confirmed(self, record: InstanceRecord) -> bool:
        with self._guard:
            return record.id in self._done and self._done[record.id] == record.started_at

    def confirm(self, record: InstanceRecord) -> None:
        with self._guard:
            self._done[record.id] = record.started_at

    def ensure(self, record: InstanceRecord) -> None:
        """Load what the record lists and the engine lacks (nothing when none is recorded)."""
        if record.state is not InstanceState.RUNNING:
            with self._guard:
                self._done.pop(record.id, None)
            return
        if self.confirmed(record) or not self.ctx.locks.acquire(record.id, blocking=False):
            return
        try:
            current = self.ctx.registry.get(record.id)
            if current is None or current.state is not InstanceState.RUNNING:
                return
            if self._reapply(current):
                self.confirm(current)
        finally:
            self.ctx.locks.release(record.id)

    def _reapply(self, record: InstanceRecord) -> bool:
        wanted = runtime_loras(record)
        if not wanted:
            return True
        base_url = str(record.endpoints.get("base_url"))
        try:
            present = self.engine.loaded(base_url)
            for entry in wanted:
                if entry["name"] not in present:
                    self.engine.load(base_url, entry["name"], entry["path"])
                    logger.info("instance %s: LoRA adapter %s loaded again", record.id, entry["name"])
        except (httpx.HTTPError, ValueError, EngineRefused) as exc:
            logger.warning("instance %s: cannot load its LoRA adapters again yet (%s); will retry", record.id, exc)
            return False
        return True

"""LoRA adapters loaded into a running vLLM instance at run time.

vLLM loads and unloads adapters while it serves when started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter``). An instance asks for that with those two in its own spec: the flag
in its arguments (with ``--max-loras`` and ``--max-lora-rank`` suited to the adapters), the
variable in its env. berth adds nothing to the command line on its own.

What an instance has loaded is kept in its durable record (``endpoints.loras``, a list of
``{"name", "path"}``), so that the router finds an adapter's base instance by the adapter's name,
and so that the adapters are loaded again when the engine comes back: after a restart, and after
the worker itself restarted and re-adopted the instance (:class:`LoraKeeper`, run by the watcher).

Adapter names and paths are user input: a name is a short token (it becomes a model name and a
URL segment), a path an absolute directory on this worker holding ``adapter_config.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from berth.utils.args import flatten_to_argv
from berth.worker.errors import InstanceConflict, InvalidRequest, WorkerError
from berth.worker.store import Endpoints, InstanceRecord, InstanceState

#: The engine variable that enables vLLM's load/unload endpoints.
RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
MAX_NAME = 128
MAX_PATH = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ADAPTER_CONFIG = "adapter_config.json"


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
    return [lora.to_json() for lora in record.endpoints.loras]


def runtime_lora_names(record: InstanceRecord) -> list[str]:
    return record.endpoints.lora_names()


def with_lora(record: InstanceRecord, name: str, path: str) -> Endpoints:
    """The record's endpoints with ``name`` (re)pointed at ``path``."""
    return record.endpoints.with_lora(name, path)


def without_lora(record: InstanceRecord, name: str) -> Endpoints:
    return record.endpoints.without_lora(name)


def serving(record: InstanceRecord) -> str:
    """The base URL of a running instance; 409 naming its state otherwise."""
    base_url = record.endpoints.base_url
    if record.state is not InstanceState.RUNNING or not base_url:
        raise InstanceConflict(f"instance {record.id!r} is {record.state.value}, not serving: load adapters once it is running")
    return str(base_url)



"""The endpoints GPUStack's server calls on a worker, served on berth's API port.

* ``GET /healthz``: open, as GPUStack's own worker has it (the server probes reachability).
* ``GET /files/file-exists``, ``/files/model-config``, ``/files/model-weight-size``: what the
  server asks to size and check a local-path model (config files only are readable).
* ``GET /serveLogs/{id}`` (``tail``, ``follow``, ``offset``/``limit``) and
  ``GET /serveLogOptions/{id}``: an instance's log, as GPUStack's UI reads it through the server.

All but ``/healthz`` need this worker's GPUStack token (what the server sends) or berth's own API
token, whether or not berth's API token is configured. The inference proxy (``/v1/*`` with
``X-GPUStack-Model-Instance``) is berth's router (:mod:`berth.worker.router`).
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from berth.worker.errors import InvalidRequest, WorkerError
from berth.worker.gpustack._agent import GPUStackAgent
from berth.worker.gpustack._files import weight_size
from berth.worker.gpustack._logs import follow_log, line_window
from berth.worker.gpustack._translate import berth_id


#: Path prefixes the GPUStack token may call (berth's auth middleware lets it through there).
GPUSTACK_PATHS = ("/healthz", "/files/", "/serveLogs/", "/serveLogOptions/", "/v1/")
CONFIG_FILES = frozenset({
    "config.json", "model_index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "adapter_config.json", "preprocessor_config.json",
})
_MAX_CONFIG_BYTES = 16 << 20


class Unauthorized(WorkerError):
    status_code = 401


class Forbidden(WorkerError):
    status_code = 403


class NotOnWorker(WorkerError):
    """The path GPUStack asked about is not on this worker (or not of the kind asked for)."""

    status_code = 404


def _agent(request: Request) -> GPUStackAgent:
    return request.app.state.gpustack


def require_token(request: Request) -> None:
    """This worker's GPUStack token, or berth's API token, as ``Authorization: Bearer``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    presented = value.strip().encode() if scheme.lower() == "bearer" else b""
    own = request.app.state.manager.settings.api_token
    if presented and (_agent(request).accepts(presented)
                      or (own is not None and hmac.compare_digest(presented, own.get_secret_value().encode()))):
        return
    raise Unauthorized("missing or wrong bearer token: send this worker's GPUStack token")


health_router = APIRouter(tags=["gpustack"])
router = APIRouter(tags=["gpustack"], dependencies=[Depends(require_token)])


@health_router.get("/healthz", summary="Liveness, as GPUStack's server probes it")
async def healthz() -> str:
    return "ok"


def _absolute(path: str) -> Path:
    if "\x00" in path or not path.startswith("/"):
        raise InvalidRequest(f"path: {path[:120]!r} must be an absolute path")
    return Path(path).resolve()


@router.get("/files/file-exists", summary="Whether a path exists on this worker")
async def file_exists(path: Annotated[str, Query(description="Absolute path to check.")]) -> dict[str, Any]:
    resolved = await asyncio.to_thread(_absolute, path)
    exists = await asyncio.to_thread(resolved.exists)
    return {"exists": exists, "path": str(resolved), "is_file": exists and resolved.is_file(),
            "is_dir": exists and resolved.is_dir()}


def _read_config(path: str) -> Any:
    resolved = _absolute(path)
    if resolved.name not in CONFIG_FILES:
        raise Forbidden(f"path: only model config files may be read ({', '.join(sorted(CONFIG_FILES))})")
    if not resolved.is_file():
        raise NotOnWorker(f"path: {path[:120]!r} is not a file on this worker")
    if resolved.stat().st_size > _MAX_CONFIG_BYTES:
        raise InvalidRequest(f"path: {path[:120]!r} is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(resolved.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"path: {path[:120]!r} is not valid JSON ({exc})") from None


@router.get("/files/model-config", summary="A model config file (config.json, tokenizer_config.json...) as JSON")
async def model_config(path: Annotated[str, Query(description="Absolute path of the config file.")]) -> Any:
    return await asyncio.to_thread(_read_config, path)


def _weights(path: str) -> int:
    resolved = _absolute(path)
    if not resolved.is_dir():
        raise NotOnWorker(f"path: {path[:120]!r} is not a directory on this worker")
    return weight_size(resolved)


@router.get("/files/model-weight-size", summary="Bytes of the weight files in a model directory")
async def model_weight_size(path: Annotated[str, Query(description="Absolute model directory.")]) -> dict[str, int]:
    return {"size": await asyncio.to_thread(_weights, path)}


def _instance(request: Request, instance_id: int) -> str:
    name = berth_id(instance_id)
    request.app.state.manager.get(name)  # InstanceNotFound (404) when this worker runs no part of it
    return name


@router.get("/serveLogs/{instance_id}", summary="An instance's log: whole, tail, follow, or a page of lines",
            response_class=StreamingResponse)
async def serve_logs(
    request: Request,
    instance_id: int,
    tail: Annotated[int, Query(ge=-1, description="Last N lines; -1 for all.")] = -1,
    follow: Annotated[bool, Query(description="Keep streaming what is appended.")] = False,
    offset: Annotated[int | None, Query(ge=0, description="First line of a page (no tail, no follow).")] = None,
    limit: Annotated[int, Query(gt=0, le=100000, description="Lines in a page.")] = 1000,
) -> Response:
    name = _instance(request, instance_id)
    manager = request.app.state.manager
    if offset is None:
        return StreamingResponse(follow_log(manager, name, tail, follow), media_type="application/octet-stream")
    if follow or tail > 0:
        return JSONResponse({"detail": "offset cannot be combined with tail or follow"}, status_code=400)
    page = await asyncio.to_thread(line_window, manager, name, offset, limit)
    headers = {"X-Log-Offset": str(page.offset), "X-Log-Line-Count": str(page.line_count),
               "X-Log-Total-Lines": str(page.total_lines)}
    return Response(page.data, media_type="application/octet-stream", headers=headers)


@router.get("/serveLogOptions/{instance_id}", summary="The restarts whose logs can be read (berth keeps the current one)")
async def serve_log_options(request: Request, instance_id: int) -> dict[str, Any]:
    record = request.app.state.manager.get(_instance(request, instance_id))
    started = datetime.datetime.fromtimestamp(record.started_at or record.created_at, tz=datetime.UTC)
    return {"restarts": [{"previous": False, "started_at": started.isoformat(), "containers": []}]}

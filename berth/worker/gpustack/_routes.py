"""The endpoints GPUStack's server calls on a worker, served on berth's API port.

* ``GET /healthz``: open, as GPUStack's own worker has it (the server probes reachability).
* ``GET /files/file-exists``, ``/files/model-config``, ``/files/model-weight-size``: what the
  server asks to size and check a local-path model (config files only are readable).
* ``GET /serveLogs/{id}`` (``tail``, ``follow``, ``offset``/``limit``) and
  ``GET /serveLogOptions/{id}``: an instance's log, as GPUStack's UI reads it through the server.

All but ``/healthz`` need this worker's GPUStack token (what the server sends) or berth's own API
token, whether or not berth's API token is configured. The inference proxy (``/v1/*`` with
``X-GPUStack-Model-Instance``) is berth's router (:mod:`berth.worker.routing`).

Handlers run on the event loop; file checks go to threads under the agent's limiter, log reads
under the app's one log-read limiter (the agent's ``log_reads``, the same the API's log
endpoints use), so GPUStack's readers never add to the reads running at once.
"""

from __future__ import annotations

import datetime
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from berth.worker.errors import Forbidden, InvalidRequest, Unauthorized, WorkerError
from berth.worker.gpustack._agent import GPUStackAgent
from berth.worker.gpustack._files import weight_size
from berth.worker.gpustack._logs import follow_log, read_page
from berth.worker.gpustack._translate import berth_id

#: Path prefixes the GPUStack token may call (berth's auth middleware lets it through there).
GPUSTACK_PATHS = ("/healthz", "/files/", "/serveLogs/", "/serveLogOptions/", "/v1/")
CONFIG_FILES = frozenset({
    "config.json", "model_index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "adapter_config.json", "preprocessor_config.json",
})
_MAX_CONFIG_BYTES = 16 << 20
T = TypeVar("T")


class JoinedServices(Protocol):
    """What these routes read of the app's services (:class:`berth.worker.api.Services`, which
    sits above this package and so is not imported here)."""

    @property
    def gpustack(self) -> GPUStackAgent | None: ...


class NotOnWorker(WorkerError):
    """The path GPUStack asked about is not on this worker (or not of the kind asked for)."""

    status_code = 404


def _agent(request: Request) -> GPUStackAgent:
    services: JoinedServices = request.app.state.services
    agent = services.gpustack
    if agent is None:  # the routes are included only with an agent: never reached
        raise NotOnWorker("this worker is not a GPUStack worker (gpustack_url is not set)")
    return agent


async def _in_thread(request: Request, call: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(call, *args, limiter=_agent(request).limiter)


def require_token(request: Request) -> None:
    """This worker's GPUStack token, or berth's API token, as ``Authorization: Bearer``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    presented = value.strip().encode() if scheme.lower() == "bearer" else b""
    own = _agent(request).settings.api_token
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
async def file_exists(request: Request,
                      path: Annotated[str, Query(description="Absolute path to check.")]) -> dict[str, Any]:
    return await _in_thread(request, _existence, path)


def _existence(path: str) -> dict[str, Any]:
    resolved = _absolute(path)
    exists = resolved.exists()
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
async def model_config(request: Request,
                       path: Annotated[str, Query(description="Absolute path of the config file.")]) -> Any:
    return await _in_thread(request, _read_config, path)


def _weights(path: str) -> int:
    resolved = _absolute(path)
    if not resolved.is_dir():
        raise NotOnWorker(f"path: {path[:120]!r} is not a directory on this worker")
    return weight_size(resolved)


@router.get("/files/model-weight-size", summary="Bytes of the weight files in a model directory")
async def model_weight_size(request: Request,
                            path: Annotated[str, Query(description="Absolute model directory.")]) -> dict[str, int]:
    return {"size": await _in_thread(request, _weights, path)}


def _instance(request: Request, instance_id: int) -> str:
    name = berth_id(instance_id)
    _agent(request).manager.get(name)  # InstanceNotFound (404) when this worker runs no part of it
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
    agent = _agent(request)
    if offset is None:
        return StreamingResponse(follow_log(agent.manager, name, tail, follow, agent.log_reads),
                                 media_type="application/octet-stream")
    if follow or tail > 0:
        return JSONResponse({"detail": "offset cannot be combined with tail or follow"}, status_code=400)
    page = await read_page(agent.manager, name, offset, limit, agent.log_reads)
    headers = {"X-Log-Offset": str(page.offset), "X-Log-Line-Count": str(page.line_count),
               "X-Log-Total-Lines": str(page.total_lines)}
    return Response(page.data, media_type="application/octet-stream", headers=headers)


@router.get("/serveLogOptions/{instance_id}", summary="The restarts whose logs can be read (berth keeps the current one)")
async def serve_log_options(request: Request, instance_id: int) -> dict[str, Any]:
    record = _agent(request).manager.get(_instance(request, instance_id))
    started = datetime.datetime.fromtimestamp(record.started_at or record.created_at, tz=datetime.UTC)
    return {"restarts": [{"previous": False, "started_at": started.isoformat(), "containers": []}]}

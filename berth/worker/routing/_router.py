"""The inference router: one OpenAI-compatible endpoint (``/v1/*`` on the worker's port) in front
of every instance this worker runs.

A request goes to one *running* instance, chosen

1. by a routing header a scheduler sets (GPUStack's ``X-GPUStack-Model-Instance``): whoever
   registered the header in the services' ``header_routes`` maps its value to a berth instance id;
2. else by the request's ``model`` (JSON body, or the ``model`` query parameter of a GET): the
   served names of running instances, and the LoRA adapters they load (``--lora-modules``, a
   GPUStack ``lora_list``, or loaded at run time, see :mod:`berth.worker.loras`), which route to
   their base instance;
3. else, when the services' ``activator`` is set (see :mod:`berth.worker.routing._activation`), by
   asking it to bring the model up within ``router_activation_timeout`` seconds.

Bodies are bounded by ``max_inference_body_bytes``, not by the control API's ``max_body_bytes``
(the worker's body limit leaves :data:`ROUTER_PREFIX` to this module): a prompt of a long context
or a base64 image is routinely several MiB. A declared ``Content-Length`` over the bound is
refused at once. When the header decides, nothing needs the body: it streams to the engine as it
arrives, counted, and the upstream request is abandoned (its connection closed) the moment the
count passes the bound. A request routed by ``model`` is read first, up to the bound, to find it.
Answers are streamed back chunk by chunk as the engine sends them, so server-sent events reach
the client token by token. Errors are OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: 400 no model named, 404 no such model, 413 a body over the bound, 502 the engine did
not answer, 503 (with ``Retry-After``) the model cannot serve in time.

Everything here runs on the event loop and never blocks it: the records come from the
registry's in-memory copy, and the engines are reached through the services' one pooled async
client (see :mod:`berth.worker.routing._services`), opened at start-up and closed at shutdown.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from berth.worker.errors import InstanceNotFound, retry_after_header
from berth.worker.loras import adapter_names, served_model_names
from berth.worker.routing._activation import ModelUnavailable, RouteGate, UnknownModel
from berth.worker.routing._services import HeaderRoute, RouterServices
from berth.worker.store import InstanceRecord, InstanceState

logger = logging.getLogger(__name__)

router = APIRouter(tags=["inference"])
#: Every path under it is this router's; it bounds their bodies itself (``max_inference_body_bytes``).
ROUTER_PREFIX = "/v1/"

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy recomputes.
_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
_RESPONSE_DROP = _HOP | {"date", "server"}
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


class RouteError(Exception):
    """A request the router cannot place; rendered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, kind: str, code: str, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param, self.retry_after = status, kind, code, param, retry_after

    def response(self) -> JSONResponse:
        headers = retry_after_header(self.retry_after) if self.retry_after is not None else None
        return openai_error(self.status, str(self), kind=self.kind, code=self.code, param=self.param, headers=headers)


def openai_error(status: int, message: str, *, kind: str, code: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error as OpenAI's clients parse it (``error``), with berth's ``detail`` beside it."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}, "detail": message}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class _OpenAIErrorFields(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class OpenAIError(BaseModel):
    error: _OpenAIErrorFields = Field(description="What OpenAI clients read.")
    detail: str = Field(description="The same message, as berth's other endpoints answer it.")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIError, "description": "No model named, or a body the router cannot read."},
    404: {"description": "No instance serves that model or instance here (OpenAIError; a path that "
                         "is not a route at all answers berth's plain {\"detail\": ...})."},
    413: {"model": OpenAIError, "description": "The body is larger than max_inference_body_bytes."},
    502: {"model": OpenAIError, "description": "The instance's engine did not answer."},
    503: {"model": OpenAIError, "description": "The model cannot serve in time (Retry-After)."},
}


# -- names (the rules are in berth.worker.loras) -----------------------------------------


def pick_instance(records: Iterable[InstanceRecord], model: str) -> InstanceRecord | None:
    """A running instance serving ``model`` (by served name, else by LoRA adapter name).

    Several replicas of one name: the one whose last start is the oldest (the most likely warm).
    """
    running = [r for r in records if r.state is InstanceState.RUNNING and r.endpoints.base_url]
    matches = [r for r in running if model in r.endpoints.served_names]
    matches = matches or [r for r in running if model in adapter_names(r)]
    return min(matches, key=lambda r: (r.ready_at or 0.0, r.id)) if matches else None


# -- resolution ------------------------------------------------------------------------------


def services_of(request: Request) -> RouterServices:
    """The app's services (made by ``create_app``), as the router sees them."""
    services: RouterServices = request.app.state.services
    return services


def _header_target(request: Request) -> str | None:
    """The instance a registered routing header names; RouteError when it names none here."""
    routes: Mapping[str, HeaderRoute] = services_of(request).header_routes
    for header, resolve in routes.items():
        value = request.headers.get(header)
        if value is None:
            continue
        instance_id = resolve(value)
        if instance_id is None:
            raise RouteError(404, f"{header} {value[:120]!r} names no instance of this worker",
                             kind="not_found_error", code="instance_not_found")
        return instance_id
    return None


def _model_of(request: Request, body: bytes) -> str:
    if request.method in ("GET", "HEAD", "DELETE"):
        model = request.query_params.get("model")
    else:
        model = _body_model(request.headers.get("content-type", ""), body)
    if not model:
        raise RouteError(400, "the request names no model: set \"model\" in the JSON body",
                         kind="invalid_request_error", code="model_required", param="model")
    return model


def _body_model(content_type: str, body: bytes) -> str | None:
    if content_type and "json" not in content_type.lower():
        raise RouteError(400, f"cannot read the model from a {content_type.split(';')[0]} body; send JSON "
                         "or route with an instance header", kind="invalid_request_error", code="unsupported_body")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise RouteError(400, "the body is not valid JSON", kind="invalid_request_error",
                         code="invalid_json") from None
    model = data.get("model") if isinstance(data, dict) else None
    if model is not None and not isinstance(model, str):
        raise RouteError(400, "\"model\" must be a string", kind="invalid_request_error",
                         code="invalid_model", param="model")
    return model


def _running(request: Request, instance_id: str) -> InstanceRecord:
    try:
        record = services_of(request).manager.get(instance_id)
    except InstanceNotFound:
        raise RouteError(404, f"instance {instance_id!r} does not exist on this worker",
                         kind="not_found_error", code="instance_not_found") from None
    if record.state is not InstanceState.RUNNING or not record.endpoints.base_url:
        raise RouteError(503, f"instance {instance_id!r} is {record.state.value}, not serving yet",
                         kind="service_unavailable", code="instance_not_ready", retry_after=5)
    return record


async def _by_model(request: Request, model: str) -> InstanceRecord:
    services = services_of(request)
    manager, activator = services.manager, services.activator
    records = manager.list()
    if isinstance(activator, RouteGate):  # sleeping or evicted engines: through ensure_ready
        records = [r for r in records if activator.routable(r.id)]
    record = pick_instance(records, model)
    if record is not None:
        return record
    if activator is None:
        raise RouteError(404, f"no running instance serves model {model!r} on this worker",
                         kind="not_found_error", code="model_not_found", param="model")
    timeout = manager.settings.router_activation_timeout
    try:
        instance_id = await activator.ensure_ready(model, timeout)
    except UnknownModel as exc:
        raise RouteError(404, str(exc), kind="not_found_error", code="model_not_found", param="model") from None
    except ModelUnavailable as exc:
        raise RouteError(503, str(exc), kind="service_unavailable", code="model_unavailable",
                         retry_after=exc.retry_after) from None
    return _running(request, instance_id)


# -- bodies ----------------------------------------------------------------------------------


def _body_bound(request: Request) -> int:
    """``max_inference_body_bytes``; RouteError at once when the declared length is over it."""
    limit: int = services_of(request).manager.settings.max_inference_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise RouteError(400, "Content-Length is not a number", kind="invalid_request_error",
                         code="invalid_content_length")
    if declared is not None and int(declared) > limit:
        raise _too_large(limit)
    return limit


def _too_large(limit: int) -> RouteError:
    return RouteError(413, f"request body is larger than {limit} bytes (max_inference_body_bytes); send "
                      "less, or raise the worker's setting", kind="invalid_request_error", code="body_too_large")


async def _counted(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives. RouteError once it passes ``limit`` bytes or the client goes away:
    raised inside an upstream send, it ends that request and closes its connection."""
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            yield chunk
    except ClientDisconnect:
        raise RouteError(400, "the client closed the connection before sending its whole body",
                         kind="invalid_request_error", code="client_disconnected") from None


def _has_body(request: Request) -> bool:
    """Whether the request carries a body at all (RFC 9112 6.3: a length or a transfer coding)."""
    return "content-length" in request.headers or "transfer-encoding" in request.headers


async def _read(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in _counted(request, limit)])


# -- forwarding ------------------------------------------------------------------------------


def _client(request: Request) -> httpx.AsyncClient:
    """The services' pooled client (opened at start-up); 503 while the worker starts or stops."""
    client = services_of(request).http
    if client is None:
        raise RouteError(503, "the worker is starting or stopping; retry", kind="service_unavailable",
                         code="worker_not_serving", retry_after=2)
    return client


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP and k.lower() != "authorization"}
    for header in services_of(request).header_routes:
        headers.pop(header, None)
        headers.pop(header.lower(), None)
    return headers


async def _send(request: Request, record: InstanceRecord, path: str,
                content: bytes | AsyncIterator[bytes]) -> Response:
    url = f"{record.endpoints.base_url}/v1/{path}"
    forward = _forward_headers(request)
    declared = request.headers.get("content-length")
    if declared is not None and not isinstance(content, bytes):
        forward["content-length"] = declared  # a streamed body keeps its length (else: chunked)
    client = _client(request)
    upstream = client.build_request(request.method, url, params=request.query_params, headers=forward, content=content)
    try:
        answer = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        raise RouteError(502, f"instance {record.id!r} did not answer ({type(exc).__name__}); it may be "
                         "restarting, retry", kind="service_unavailable", code="upstream_unreachable",
                         retry_after=2) from None
    headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _RESPONSE_DROP]
    response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 background=BackgroundTask(answer.aclose))
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return response


def _touch(request: Request, instance_id: str) -> None:
    activator = services_of(request).activator
    if activator is not None:
        try:
            activator.touch(instance_id)
        except Exception:  # noqa: BLE001 - bookkeeping never fails a request
            logger.warning("model activator failed to note a request for %s", instance_id, exc_info=True)


async def _route(request: Request, path: str) -> Response:
    limit = _body_bound(request)
    target = _header_target(request)
    if target is not None:
        record = _running(request, target)
        content: bytes | AsyncIterator[bytes] = _counted(request, limit) if _has_body(request) else b""
    else:
        content = await _read(request, limit)
        record = await _by_model(request, _model_of(request, content))
    _touch(request, record.id)
    return await _send(request, record, path, content)


async def inference(request: Request, path: str) -> Response:
    """Routed by `X-GPUStack-Model-Instance` (when GPUStack manages this worker) or by the request's
    `model`; streamed both ways. Errors: OpenAI's `{"error": {...}}`."""
    if path == "models" and request.method == "GET" and not _has_routing_header(request):
        return _models(request)
    try:
        return await _route(request, path)
    except RouteError as exc:
        return exc.response()


for _method in _METHODS:
    router.add_api_route(ROUTER_PREFIX + "{path:path}", inference, methods=[_method],
                         operation_id=f"inference_{_method.lower()}", responses=_RESPONSES,
                         summary="OpenAI-compatible API of this worker's instances",
                         include_in_schema=_method != "HEAD")


def _has_routing_header(request: Request) -> bool:
    return any(header in request.headers for header in services_of(request).header_routes)


def _models(request: Request) -> JSONResponse:
    """Every name a running instance answers to, in OpenAI's list shape."""
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in services_of(request).manager.list():
        if record.state is not InstanceState.RUNNING:
            continue
        for name in served_model_names(record):
            if name not in seen:
                seen.add(name)
                data.append({"id": name, "object": "model", "created": int(record.ready_at or time.time()),
                             "owned_by": "berth", "root": record.id})
    return JSONResponse({"object": "list", "data": data})

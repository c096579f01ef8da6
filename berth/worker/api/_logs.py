"""The log endpoint both APIs share: RFC 9110 byte ranges over an instance's log.

Log reads run in worker threads under a limiter of their own (the services' ``log_reads``, of
:data:`~berth.worker.api._deps.LOG_READ_THREADS`; GPUStack's ``serveLogs`` reads under the same one), apart from the
threads that create and delete use: however many clients follow logs, at most that
many reads run at once, the rest wait their turn without holding a thread, and the event loop
that answers list and status is never crowded out by runnable reader threads. A follower has
one read in flight at a time and gets at most 1 MiB per answer, so a slow one costs only itself.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi.responses import JSONResponse, Response

from berth.deployers.base import RUN_CONTAINER
from berth.worker.api._deps import Services
from berth.worker.api._log_ranges import (
    MAX_READ,
    RangeError,
    Window,
    parse_range,
    window,
)
from berth.worker.instances import ServeManager

OCTETS = "application/octet-stream"
LOG_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {OCTETS: {}}, "description": "The first 1 MiB of the log (no Range header)."},
    206: {"content": {OCTETS: {}}, "description": "The requested range (at most 1 MiB), with Content-Range."},
    400: {"description": "Malformed or unsupported Range header."},
    404: {"description": "No such instance."},
    416: {"description": "Range starts past the end; Content-Range: bytes */TOTAL, empty body."},
}


def _unsatisfiable(total: int) -> Response:
    return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})


async def read_log(services: Services, instance_id: str, range_header: str | None,
                   container: str = RUN_CONTAINER) -> Response:
    """:func:`log_response` in a worker thread, under the services' log-read limiter."""
    return await anyio.to_thread.run_sync(log_response, services.manager, instance_id, range_header, container,
                                          limiter=services.log_reads)


def log_response(manager: ServeManager, instance_id: str, range_header: str | None,
                 container: str = RUN_CONTAINER) -> Response:
    """200, 206, 400, 404 or 416 as :mod:`berth.worker.log_ranges` describes."""
    manager.get(instance_id)
    if range_header is None:
        chunk = manager.logs(instance_id, 0, MAX_READ - 1, container=container)
        return Response(chunk.data, status_code=200, media_type=OCTETS, headers={"Accept-Ranges": "bytes"})
    try:
        wanted = parse_range(range_header)
    except RangeError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    if wanted.first is None:
        span = window(wanted, manager.log_size(instance_id, container=container))
    else:
        last = wanted.first + MAX_READ - 1
        span = Window(wanted.first, last if wanted.last is None else min(wanted.last, last))
    if not span.satisfiable:
        return _unsatisfiable(manager.log_size(instance_id, container=container))
    chunk = manager.logs(instance_id, span.start, span.end, container=container)
    if span.start >= chunk.total:
        return _unsatisfiable(chunk.total)
    headers = {"Content-Range": f"bytes {span.start}-{chunk.end}/{chunk.total}", "Accept-Ranges": "bytes"}
    return Response(chunk.data, status_code=206, media_type=OCTETS, headers=headers)

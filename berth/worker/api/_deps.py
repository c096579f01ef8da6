"""What every router shares: the manager dependency (from ``app.state``) and documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from berth.worker.api._models import ErrorBody
from berth.worker.instances import ServeManager


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 404, 409, 413, 422, 500, 503)
}


async def manager_of(request: Request) -> ServeManager:
    """The worker's manager, from the app's state (never a module global); async, so FastAPI
    calls it on the event loop instead of sending every request through a thread for it."""
    return request.app.state.manager


Manager = Annotated[ServeManager, Depends(manager_of)]

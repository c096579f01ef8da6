"""What the inference router asks of whoever can bring a model up.

The router (``/v1/*`` on the worker's port) finds a *running* instance for a request by
GPUStack's instance header or by the request's ``model``. When none runs, it asks the worker's
:class:`ModelActivator` (the services' ``activator``, None when model swapping is off) to
make one ready: start a parked model, wake a sleeping one. The activator raises
:class:`ModelUnavailable` when the model exists but cannot be ready in time (the router answers
503 with ``Retry-After``) and :class:`UnknownModel` when no such model is defined (404).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from berth.worker.errors import WorkerError, retry_after_header


class ModelUnavailable(WorkerError):
    """The model is defined but cannot serve before the deadline; retry after ``retry_after`` s."""

    status_code = 503

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return retry_after_header(self.retry_after)


class UnknownModel(WorkerError):
    """No instance serves this model name and none is defined under it."""

    status_code = 404


@runtime_checkable
class ModelActivator(Protocol):
    """Brings a model up on demand and hears of its use (for idle policies)."""

    async def ensure_ready(self, model: str, timeout: float) -> str:
        """Return the id of an instance of ``model`` that answers requests now.

        Waits at most ``timeout`` seconds (starting or waking it as needed); concurrent calls
        for one model share one start. Raises :class:`ModelUnavailable` or :class:`UnknownModel`.
        """
        ...

    def touch(self, instance_id: str) -> None:
        """Note that a request was routed to ``instance_id`` just now."""
        ...


@runtime_checkable
class RouteGate(Protocol):
    """An activator that can also say a *running* instance must not get new requests.

    A sleeping engine's instance is ``running`` (its process lives) but cannot answer, and an
    engine being evicted must only finish what it has. The router skips instances for which
    :meth:`routable` is False when it picks by name, and asks :meth:`ModelActivator.ensure_ready`
    instead (which wakes the model, or waits for the eviction and starts it again).
    """

    def routable(self, instance_id: str) -> bool:
        """False while ``instance_id``'s engine sleeps or is being evicted."""
        ...

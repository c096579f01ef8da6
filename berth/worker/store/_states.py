"""An instance's lifecycle as the worker sees it, and how it maps onto the launcher's two words.

``pending`` (recorded, workload not created yet) -> ``starting`` (workload alive, not ready) ->
``running`` (vLLM's ``/health`` answered 200 and ``/v1/models`` lists the served name) ->
``failed`` (exited non-zero, killed from outside, vanished, never became ready) or ``stopped``
(exited 0 or stopped on request). ``stopping`` is a delete in progress.

The launcher API's ``status`` field keeps the seed's meaning: ``running`` while the instance's
process is alive (``pending``, ``starting``, ``running``, ``stopping``), ``stopped`` once it has
exited (``failed``, ``stopped``). Whether it is ready is the separate ``ready`` field.
"""

from __future__ import annotations

from berth.schemas.workload import LifecycleState


class InstanceState(LifecycleState):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def active(self) -> bool:
        """The worker watches it: a workload may be alive."""
        return self in (InstanceState.PENDING, InstanceState.STARTING, InstanceState.RUNNING)


def launcher_status(state: InstanceState) -> str:
    """The launcher contract's ``status``: ``running`` or ``stopped``."""
    return "stopped" if state.terminal else "running"

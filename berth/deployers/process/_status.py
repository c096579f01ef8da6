"""A shim's state file read as berth's :class:`ContainerStatus`.

* the shim recorded an exit: ``stopped`` for exit code 0 or a stop berth asked for, ``failed``
  for a non-zero code, a failure to start, or a signal nobody asked for (``exit_code`` is
  ``128 + signal`` then, as a shell or Docker reports it, and ``signal`` names it);
* no exit recorded and the process lives: ``running`` (readiness is the worker's business);
* no state yet: ``pending`` (the shim is still starting);
* process and shim both gone without a record (say, both were SIGKILLed): ``failed``.
"""

from __future__ import annotations

from berth.deployers._stdlib.proc import is_running, signal_name
from berth.deployers.process._state import ContainerState
from berth.schemas.workload import ContainerStatus, WorkloadState


def container_status(name: str, state: ContainerState | None) -> ContainerStatus:
    """The status of container ``name`` from its shim's ``state`` (``None``: not written yet)."""
    if state is None:
        return ContainerStatus(name=name, state=WorkloadState.PENDING, reason="starting its supervisor")
    if state.finished:
        return _finished(name, state)
    base = {"name": name, "pid": state.pid}
    if is_running(state.pid, state.pid_start):
        supervised = is_running(state.shim_pid, state.shim_start)
        reason = "" if supervised else "its supervisor is gone; still owned through its process group"
        return ContainerStatus(**base, state=WorkloadState.RUNNING, reason=reason)
    if is_running(state.shim_pid, state.shim_start):
        return ContainerStatus(**base, state=WorkloadState.RUNNING, reason="exiting")
    return ContainerStatus(
        **base, state=WorkloadState.FAILED, reason="exited while its supervisor was gone; exit status unknown"
    )


def _finished(name: str, state: ContainerState) -> ContainerStatus:
    base = {"name": name, "pid": state.pid, "exit_code": state.exit_code, "signal": state.signal}
    if state.error:
        return ContainerStatus(**base, state=WorkloadState.FAILED, reason=state.error)
    if state.stop_requested:
        how = f" ({signal_name(state.signal)})" if state.signal else f" (exit code {state.exit_code})"
        return ContainerStatus(**base, state=WorkloadState.STOPPED, reason=f"stopped on request{how}")
    if state.signal:
        return ContainerStatus(**base, state=WorkloadState.FAILED, reason=f"killed by {signal_name(state.signal)}")
    if state.exit_code == 0:
        return ContainerStatus(**base, state=WorkloadState.STOPPED, reason="exited with code 0")
    return ContainerStatus(**base, state=WorkloadState.FAILED, reason=f"exited with code {state.exit_code}")

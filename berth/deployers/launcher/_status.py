"""Launcher instance records -> berth's :class:`WorkloadStatus` (pure; no I/O).

* alive -> ``running`` (readiness is the worker's job, not the deployer's);
* ended after berth asked it to stop, or with exit code 0 -> ``stopped``;
* ended with a non-zero exit code -> ``failed``, with the last log lines in the reason;
* killed by a signal berth did not send -> ``failed``, naming the signal;
* ended while no daemon watched it (the daemon itself died) -> ``failed``, exit unknown.
"""

from __future__ import annotations

from berth.deployers._stdlib.proc import signal_name
from berth.deployers.launcher._records import InstanceRecord
from berth.deployers.base import RUN_CONTAINER, STOPPED_BY_BERTH
from berth.schemas.workload import ContainerStatus, WorkloadState, WorkloadStatus

#: How many trailing log lines a failure reason quotes.
TAIL_LINES = 10


def record_state(record: InstanceRecord) -> tuple[WorkloadState, str]:
    """The state of one instance and why, without the log tail."""
    if record.alive:
        return WorkloadState.RUNNING, ""
    if record.stop_requested:
        return WorkloadState.STOPPED, STOPPED_BY_BERTH
    if record.signal is not None:
        name = signal_name(record.signal)
        return WorkloadState.FAILED, f"killed by {name} ({record.signal}), not sent by berth"
    if record.exit_code == 0:
        return WorkloadState.STOPPED, "the vLLM server exited with code 0"
    if record.exit_code is None:
        return WorkloadState.FAILED, "the launcher daemon ended before it saw how the instance ended"
    return WorkloadState.FAILED, f"the vLLM server exited with code {record.exit_code}"


def with_tail(reason: str, tail: str) -> str:
    """``reason`` followed by the last :data:`TAIL_LINES` non-empty lines of ``tail``."""
    lines = [line for line in tail.splitlines() if line.strip()][-TAIL_LINES:]
    if not lines:
        return reason
    return reason + "; last log lines:\n" + "\n".join(lines)


def workload_status(
    record: InstanceRecord, *, deployer: str, run_dir: str, tail: str = ""
) -> WorkloadStatus:
    """The status berth reports for ``record``; ``tail`` is the end of its log (for failures)."""
    state, reason = record_state(record)
    if state is WorkloadState.FAILED:
        reason = with_tail(reason, tail)
    container = ContainerStatus(
        name=RUN_CONTAINER,
        state=state,
        exit_code=record.exit_code,
        signal=record.signal,
        reason=reason,
        pid=record.pid,
    )
    return WorkloadStatus(
        name=record.name,
        deployer=deployer,
        state=state,
        labels=dict(record.labels),
        containers=[container],
        exit_code=record.exit_code,
        reason=reason,
        created_at=record.created_at,
        identity={"run_dir": run_dir, "pid": str(record.pid), "log": record.log},
    )

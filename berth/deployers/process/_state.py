"""The process deployer's on-disk layout and the small JSON state files in it.

Standard library only, because the shim imports it (see :mod:`berth.deployers._stdlib`).

::

    <run_dir>/<workload>/workload.json        plan name, labels, container names, created_at
    <run_dir>/<workload>/<container>.state    written by that container's shim only
    <run_dir>/<workload>/<container>.log      stdout + stderr of the process, O_APPEND
    <run_dir>/<workload>/<container>.sh       the plan's command script, when it has one

Every write goes to a temporary file that is renamed over the target, so a reader never sees a
half-written file. Launch specs (which may carry secrets in their environment) never touch the
disk: the deployer hands them to the shim through a pipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from berth.deployers._stdlib.files import JsonRecord, read_json, write_json

#: Set in every process's environment to ``<workload dir>:<container>``; finds stragglers that
#: left both the process group and the session (a daemonising grandchild).
TAG_ENV = "BERTH_PROCESS_TAG"
WORKLOAD_FILE = "workload.json"


@dataclass(slots=True)
class ContainerState(JsonRecord):
    """What a shim knows about the process it supervises."""

    shim_pid: int | None = None
    shim_start: int | None = None
    pid: int | None = None
    pid_start: int | None = None
    pgid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    stop_requested: bool = False
    error: str = ""
    #: Written by a shim that was a subreaper as it leaves, once it has reaped its last
    #: descendant: nothing of the container is left, so a stop need not search ``/proc``.
    all_reaped: bool = False

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def state_path(workload_dir: str, container: str) -> str:
    return os.path.join(workload_dir, f"{container}.state")


def log_path(workload_dir: str, container: str) -> str:
    return os.path.join(workload_dir, f"{container}.log")


def script_path(workload_dir: str, container: str) -> str:
    return os.path.join(workload_dir, f"{container}.sh")


def process_tag(workload_dir: str, container: str) -> str:
    return f"{os.path.abspath(workload_dir)}:{container}"


def read_state(workload_dir: str, container: str) -> ContainerState | None:
    data = read_json(state_path(workload_dir, container))
    return None if data is None else ContainerState.from_dict(data)


def write_state(workload_dir: str, container: str, state: ContainerState) -> None:
    write_json(state_path(workload_dir, container), state.to_dict())

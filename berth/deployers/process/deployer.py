"""Run berth plans as local processes: one process per container of the plan.

Each container (the ``ray-head`` sidecar too) runs under its own small supervisor, the shim
(:mod:`berth.deployers.process.shim`), in a session of its own. The shim starts the command,
waits for it and writes pid, process group, exit code, signal and timestamps to a JSON file in
the run directory; ``get``/``list`` read those files, so a new ``ProcessDeployer`` over the same
``run_dir`` finds and adopts everything an earlier one started, even after berth was killed
with SIGKILL. Nothing is ever unowned: every process is in a shim's care or findable by its
group, session or environment tag.

* command + args, or the plan's command script with the args as positional parameters;
* env: berth's own environment (``inherit_env``), then the plan's envs, then the vendor's
  visible-devices variables from the container's GPU resources, ``PATH`` with ``bin_dirs``
  first;
* stdout and stderr go straight from the process into ``<run_dir>/<name>/<container>.log``
  (``O_APPEND``): nothing passes a bounded queue, and ``logs()`` reads any byte range with one
  ``pread`` while the file grows;
* ``create`` checks what a plan can get wrong (names, commands, ``#!`` interpreters, working
  directories, ports) and refuses it at once with :class:`InvalidWorkload`; then it spawns the
  shims and returns without waiting for them to start (a container is ``pending`` until its
  shim reports; one that cannot start fails the workload: see :mod:`._start`);
* ``delete`` sends SIGTERM to each process group, SIGKILL after the timeout, and waits for each
  shim to leave, which it does once it has reaped every descendant; stragglers are swept from
  ``/proc`` only when a shim is gone without saying so (:mod:`._stop`); state and logs removed;
* the plan's declared ports are not published (processes share the host network), but a plan
  whose port is already bound here is refused with :class:`InvalidWorkload` naming it (a bind
  probe per port: :mod:`._ports`).

Container notions (image, user/group, privileged, capabilities, mounts, files, shm size,
checks, restart policy, init containers' profile) do not apply to a local process: they are
ignored with a debug log line, except Init-profile containers, which are refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers._logfile import read_range
from berth.deployers._stdlib.files import read_json, write_json
from berth.deployers._stdlib.names import check_name
from berth.deployers.base import (
    RUN_CONTAINER,
    LocalDeployer,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.deployers.process._ports import check_ports_free
from berth.deployers.process._spec import LaunchSpec, build_launch_specs, masked_argv, plan_problem
from berth.deployers.process._start import ROLLBACK_TIMEOUT, SHIM_MODULE, Spawned, Start, collect, spawn, stop_all
from berth.deployers.process._state import WORKLOAD_FILE, log_path, read_state
from berth.deployers.process._status import container_status
from berth.deployers.process._stop import Target, stop_targets
from berth.schemas.workload import ContainerStatus, LogChunk, WorkloadState, WorkloadStatus, aggregate_state

logger = logging.getLogger(__name__)


class ProcessDeployer(LocalDeployer):
    """Runs each container of a plan as a supervised local process.

    Takes :class:`LocalDeployer`'s arguments (``run_dir`` holds state and logs; ``python``
    runs the shims; ``start_timeout`` bounds how long starting one shim may take), plus
    ``bin_dirs``, searched for commands before ``PATH`` (default: the directory of this Python,
    i.e. the virtualenv's ``bin``).
    """

    name = "process"

    def _setup(self, *, bin_dirs: Sequence[str] | None = None) -> None:
        self.bin_dirs = list(bin_dirs) if bin_dirs is not None else [os.path.dirname(sys.executable)]
        self._lock = threading.Lock()
        #: workload name -> its containers, as written at create (they never change)
        self._containers: dict[str, frozenset[str]] = {}
        #: workload name -> the thread waiting for its shims' reports, while they start
        self._starting: dict[str, Start] = {}

    def check(self, plan: WorkloadPlan) -> str | None:
        """Refuses Init-profile containers and containers with no command (no image to fall
        back on); commands are looked up only at ``create``."""
        return super().check(plan) or plan_problem(plan)

    # -- create --------------------------------------------------------------------------

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        name = str(plan.name)
        workload_dir = self._dir(name)
        specs = build_launch_specs(plan, workload_dir=workload_dir, bin_dirs=self.bin_dirs, base_env=self.base_env())
        with self._lock:
            check_ports_free(plan.containers or [])
            self._claim(workload_dir, name)
        containers = [s.container for s in specs]
        spawned: list[Spawned] = []
        try:
            self._write_workload(workload_dir, plan, specs)
            for spec in specs:
                self._log_start(workload_dir, spec)
                spawned.append(spawn(self.python, workload_dir, spec))
        except BaseException:
            collect(spawned, self.start_timeout)  # the shims already started write their state
            stop_all(workload_dir, containers)
            shutil.rmtree(workload_dir, ignore_errors=True)
            raise
        self._containers[name] = frozenset(containers)
        self._begin(name, Start(workload_dir, containers, spawned, self.start_timeout, self._started))
        return self.get(name)

    def _claim(self, workload_dir: str, name: str) -> None:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        try:
            os.mkdir(workload_dir, 0o700)
        except FileExistsError:
            raise WorkloadExists(f"workload {name!r} already exists in {self.run_dir}") from None

    def _write_workload(self, workload_dir: str, plan: WorkloadPlan, specs: list[LaunchSpec]) -> None:
        for spec in specs:
            fd = os.open(log_path(workload_dir, spec.container), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            if spec.script is not None and spec.script_file is not None:
                fd = os.open(spec.script_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(spec.script)
        meta = {
            "name": plan.name,
            "labels": dict(plan.labels or {}),
            "containers": [s.container for s in specs],
            "created_at": time.time(),
        }
        write_json(os.path.join(workload_dir, WORKLOAD_FILE), meta)

    @staticmethod
    def _log_start(workload_dir: str, spec: LaunchSpec) -> None:
        logger.debug(
            "starting %s/%s: %s (env: %s)",
            os.path.basename(workload_dir), spec.container, masked_argv(spec.argv), ", ".join(sorted(spec.env)),
        )

    def _begin(self, name: str, start: Start) -> None:
        with self._lock:  # started under the lock: a delete never joins a thread not yet started
            self._starting[name] = start
            start.start()

    def _started(self, start: Start) -> None:
        with self._lock:
            if self._starting.get(start.workload) is start:
                del self._starting[start.workload]

    def _settle(self, name: str) -> None:
        """Wait until the shims of ``name`` have all reported (at once when none is starting)."""
        with self._lock:
            start = self._starting.get(name)
        if start is not None:
            start.join(self.start_timeout + ROLLBACK_TIMEOUT + 10.0)

    # -- read ----------------------------------------------------------------------------

    def get(self, name: str) -> WorkloadStatus:
        workload_dir = self._dir(name)
        meta = read_json(os.path.join(workload_dir, WORKLOAD_FILE))
        if meta is None:
            raise WorkloadNotFound(f"no workload named {name!r} in {self.run_dir}")
        containers = [container_status(c, read_state(workload_dir, c)) for c in meta["containers"]]
        return self._status(name, meta, containers, workload_dir)

    def _status(
        self, name: str, meta: dict[str, object], containers: list[ContainerStatus], workload_dir: str
    ) -> WorkloadStatus:
        run = next((c for c in containers if c.name == RUN_CONTAINER), containers[0] if containers else None)
        failed = next((c for c in containers if c.state is WorkloadState.FAILED), None)
        identity = {"run_dir": self.run_dir, "workload_dir": workload_dir}
        identity.update({f"pgid.{c.name}": str(c.pid) for c in containers if c.pid})
        created = meta.get("created_at")
        return WorkloadStatus(
            name=name,
            deployer=self.name,
            state=aggregate_state([c.state for c in containers]),
            labels=dict(meta.get("labels") or {}),  # type: ignore[call-overload]
            containers=containers,
            exit_code=run.exit_code if run else None,
            reason=(failed or run).reason if (failed or run) else "",
            created_at=float(created) if isinstance(created, (int, float)) else None,
            identity=identity,
        )

    def _list(self) -> Iterator[WorkloadStatus]:
        try:
            entries = [e.name for e in os.scandir(self.run_dir) if e.is_dir()]
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                yield self.get(entry)
            except (WorkloadNotFound, ValueError):
                continue

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        try:
            return read_range(self._log_file(name, container), start, end, missing_ok=False)
        except FileNotFoundError:  # deleted meanwhile, maybe by another deployer over this run_dir
            self._containers.pop(name, None)
            raise WorkloadNotFound(f"no workload named {name!r} in {self.run_dir}") from None

    def _log_file(self, name: str, container: str) -> str:
        """The log of ``container``. A workload's containers never change, so they are read from
        disk once (again only for a container not among them, as after a re-create elsewhere)."""
        workload_dir = self._dir(name)
        if container not in self._containers.get(name, ()):
            meta = read_json(os.path.join(workload_dir, WORKLOAD_FILE))
            if meta is None or container not in meta.get("containers", []):
                raise WorkloadNotFound(f"no container {container!r} in workload {name!r}")
            self._containers[name] = frozenset(meta["containers"])
        return log_path(workload_dir, container)

    # -- delete --------------------------------------------------------------------------

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        try:
            workload_dir = self._dir(name)
        except WorkloadNotFound:
            return None
        self._settle(name)
        self._containers.pop(name, None)
        if not os.path.isdir(workload_dir):
            return None
        meta = read_json(os.path.join(workload_dir, WORKLOAD_FILE))
        containers = list(meta["containers"]) if meta else _containers_on_disk(workload_dir)
        targets = [Target(workload_dir, c, read_state(workload_dir, c)) for c in containers]
        stop_targets(targets, timeout)
        last = self.get(name) if meta else None
        shutil.rmtree(workload_dir, ignore_errors=True)
        return last

    def _dir(self, name: str) -> str:
        try:
            return os.path.join(self.run_dir, check_name("workload", name))
        except ValueError as exc:
            raise WorkloadNotFound(f"no workload named {name!r} in {self.run_dir}: {exc}") from None


def _containers_on_disk(workload_dir: str) -> list[str]:
    suffix = ".state"
    return [n[: -len(suffix)] for n in os.listdir(workload_dir) if n.endswith(suffix)]


__all__ = ["SHIM_MODULE", "ProcessDeployer"]

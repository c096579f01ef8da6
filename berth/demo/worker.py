"""A berth worker (``berth serve``) run as a child process on 127.0.0.1, and its API.

The demo talks to the worker only through its HTTP API, as any other client would. The worker
runs in a session of its own, so a Ctrl-C in the terminal reaches the demo and not the worker;
:meth:`LocalWorker.stop` then tears everything down in order: the worker's instances (through
the API), the worker's process group, the launcher daemon the worker started (it outlives its
worker by design, for re-adoption), and finally any process still naming the worker's private
data directory. A worker left running with ``--keep`` is described by a small JSON state file,
from which :meth:`LocalWorker.from_state` rebuilds the handle that stops it later.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth.utils import worker_api
from berth.utils.ports import BELOW_EPHEMERAL, free_port, free_port_range
from berth.utils.waiting import WaitTimeout, wait_until

__all__ = ["LocalWorker", "WorkerAPIError", "free_port_block"]

HOST = "127.0.0.1"
#: Where the demo's worker takes its instances' ports: blocks below Linux's ephemeral range
#: (32768 and up), so no port the kernel hands out to a client collides with them.
_PORT_AREA = (20000, BELOW_EPHEMERAL[1])
#: Seconds between two looks at a starting worker.
_START_POLL_S = 0.2


class WorkerAPIError(worker_api.WorkerAPIError, RuntimeError):
    """The worker did not start, or its API refused a request; the message says which and why."""


class _Unreachable(worker_api.WorkerUnreachable, WorkerAPIError):
    """The worker does not answer (also an ``OSError``)."""


class _DemoWorkerAPI(worker_api.WorkerAPI):
    error_type = WorkerAPIError
    unreachable_type = _Unreachable


def free_port_block(size: int = 100) -> str:
    """A range ``START-END`` of ``size`` ports, none bound right now, picked at random.

    The worker's default instance range (40000-40999) is the one every berth worker on a machine
    starts with; the demo runs beside whatever else the machine serves (other workers, other demos,
    test suites), and its instance binds its port seconds after the worker chose it. A random block
    nobody holds makes taking the same port in between unlikely.
    """
    try:
        return free_port_range(size, _PORT_AREA)
    except OSError as exc:
        raise WorkerAPIError(str(exc)) from None


@dataclass
class LocalWorker:
    """``berth serve`` on ``127.0.0.1:port`` with its own data directory."""

    data_dir: Path
    port: int
    deployer: str = "launcher"
    pid: int | None = None
    owns_data_dir: bool = True
    #: The instances' port range (``BERTH_INSTANCE_PORT_RANGE``); empty: the worker's default.
    instance_ports: str = ""
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, port: int | None = None, deployer: str = "launcher") -> LocalWorker:
        """A worker (not started yet) with a fresh temporary data directory."""
        data_dir = Path(tempfile.mkdtemp(prefix="berth-demo-"))
        return cls(data_dir=data_dir, port=port or free_port(), deployer=deployer, instance_ports=free_port_block())

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The worker's own output (berth's log lines and uvicorn's access log)."""
        return self.data_dir / "worker.log"

    @property
    def api(self) -> worker_api.WorkerAPI:
        """The worker's API (its errors are :class:`WorkerAPIError`, the demo's)."""
        return _DemoWorkerAPI(self.url, timeout=60.0, unreachable_hint=f"see {self.log_path}")

    # -- start ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start ``berth serve`` and wait until its ``/health`` answers."""
        if _listening(self.port):
            raise WorkerAPIError(f"port {self.port} is already in use on {HOST}; pass another --port")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_worker_env(self.instance_ports), start_new_session=True,
            )
        self.pid = self._process.pid
        self._wait_healthy(timeout)

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "berth", "serve", "--host", HOST, "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--deployer", self.deployer,
        ]

    def _wait_healthy(self, timeout: float) -> None:
        def healthy() -> bool:
            if not self.alive():
                raise WorkerAPIError(f"the worker exited at start; its log ends with:\n{self.log_tail()}")
            return self.api.health(timeout=2.0)

        try:
            wait_until(healthy, timeout=timeout, interval=_START_POLL_S, what=f"the worker on {self.url}")
        except WaitTimeout:
            raise WorkerAPIError(
                f"the worker did not answer on {self.url} within {timeout:.0f} s; see {self.log_path}") from None

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def log_tail(self, size: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no worker log)"
        return data[-size:].decode("utf-8", "replace")

    # -- API -----------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        """A request whose answer must be a success; its JSON body. Raises :class:`WorkerAPIError`."""
        return self.api.call(method, path, body, timeout=timeout)

    def instance_log(self, instance_id: str, tail: int = 1 << 20) -> bytes:
        """The last ``tail`` bytes of an instance's log (empty when there is none)."""
        try:
            reply = self.api.request("GET", f"/v2/vllm/instances/{worker_api.quoted(instance_id)}/log",
                                     headers={"Range": f"bytes=-{tail}"})
        except _Unreachable:
            return b""
        return reply.body if reply.status in (200, 206) else b""

    # -- state file (--keep) ---------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "data_dir": str(self.data_dir), "deployer": self.deployer}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LocalWorker:
        return cls(data_dir=Path(state["data_dir"]), port=int(state["port"]),
                   deployer=str(state.get("deployer", "launcher")), pid=state.get("pid"))

    def is_ours(self) -> bool:
        """Whether ``pid`` still is this worker (and not a process that reused its id)."""
        return self.pid is not None and str(self.data_dir) in _cmdline(self.pid)

    # -- stop ------------------------------------------------------------------------------

    def stop(self, grace: float = 20.0, remove_data: bool = True) -> list[int]:
        """Stop instances, worker and launcher daemon; return the pids of stragglers killed."""
        if self.alive() and (self._process is not None or self.is_ours()):
            self._delete_instances()
            self._terminate(grace)
        _shutdown_launcher(self.data_dir / "launcher")
        stragglers = _sweep(str(self.data_dir))
        if remove_data and self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return stragglers

    def _delete_instances(self) -> None:
        try:
            self.api.request("DELETE", "/v2/vllm/instances", timeout=120.0)
        except _Unreachable:
            pass  # the sweep below still finds what it left

    def _terminate(self, grace: float) -> None:
        assert self.pid is not None
        _signal_group(self.pid, signal.SIGTERM)
        try:
            wait_until(lambda: not self.alive(), timeout=max(grace, 0.0), interval=0.1,
                       what="the demo worker to exit")
        except WaitTimeout:
            _signal_group(self.pid, signal.SIGKILL)
            if self._process is not None:
                self._process.wait(timeout=10)


def _worker_env(instance_ports: str = "") -> dict[str, str]:
    """This environment without BERTH_* settings (the demo's worker is self-contained)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BERTH_")}
    env["BERTH_STOP_INSTANCES_ON_EXIT"] = "true"
    if instance_ports:
        env["BERTH_INSTANCE_PORT_RANGE"] = instance_ports
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the worker leads its own session, so its pid is its group id
    except (ProcessLookupError, PermissionError):
        pass


def _shutdown_launcher(run_dir: Path) -> None:
    """Stop the launcher daemon (and its instances) the worker started in ``run_dir``, if any."""
    if not run_dir.is_dir():
        return
    try:
        from berth.deployers.launcher import LauncherDeployer

        LauncherDeployer(run_dir=run_dir).shutdown(timeout=10.0)
    except Exception:  # noqa: BLE001  (best effort: the sweep below is the backstop)
        pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _sweep(marker: str) -> list[int]:
    """Kill (SIGKILL, by process group) every process that names ``marker`` in its command
    line or environment: only this worker's processes carry its private data directory."""
    found = [pid for pid in _pids() if marker in _cmdline(pid) or marker.encode() in _environ(pid)]
    own_group = os.getpgrp()
    for pid in found:
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return found


def _pids() -> list[int]:
    if not os.path.isdir("/proc"):
        return []
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]

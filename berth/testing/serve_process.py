"""Starting and stopping a real ``berth serve`` subprocess (one way, for every test suite and benchmark).

:class:`ServeWorker` is such a worker with its API client; :func:`spawn_serve`, :func:`wait_healthy`
and :func:`stop_group` are its steps (:func:`stop_group` also stops any other process started in a
session of its own, such as ``vllm serve``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from berth.utils.ports import LOOPBACK, free_port
from berth.utils.waiting import WaitTimeout, wait_until

__all__ = ["ServeWorker", "spawn_serve", "stop_group", "wait_healthy"]


def spawn_serve(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m berth serve ARGS`` in its own session, output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "berth", "serve", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_healthy(proc: subprocess.Popen[bytes], http: httpx.Client, log: Path, timeout: float,
                 poll: float = 0.1) -> None:
    """Until ``/health`` answers 200; fails with the worker's log if it exits or times out."""
    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=max(timeout, 0.0), interval=poll, what="berth serve to answer /health")
    except WaitTimeout:
        raise AssertionError(f"berth serve did not answer /health in {timeout:.0f} s:\n" + log.read_text()) from None


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after ``timeout`` s; no-op once exited."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class ServeWorker:
    """``berth serve`` on a free loopback port in a session of its own, restartable after :meth:`kill9`.

    Its data directory is ``root/data`` and its output goes to ``root/log_name``; its environment
    is this process's without any ``BERTH_*`` variable, plus ``env``. :attr:`http` is a client of
    its API (``timeout`` s per request). ``kill9_group``: whether :meth:`kill9` kills the worker's
    whole process group, or the worker process alone (its instances run in sessions of their own,
    as on a node).
    """

    kill9_group = False

    def __init__(self, root: Path, env: Mapping[str, str], *, args: Sequence[str] = (), timeout: float = 30.0,
                 start_timeout: float = 60.0, poll: float = 0.1, stop_timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None, log_name: str = "serve.log") -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.data_dir = root / "data"
        self.log = root / log_name
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.env = {**inherited, "BERTH_DATA_DIR": str(self.data_dir), **env}
        self.args = ["--port", str(self.port), *args]
        self.start_timeout, self.poll, self.stop_timeout = start_timeout, poll, stop_timeout
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=timeout, headers=headers)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the worker (with ``env`` instead of :attr:`env` when given) and wait for ``/health``."""
        self.proc = spawn_serve(self.args, dict(self.env if env is None else env), self.log)
        wait_healthy(self.proc, self.http, self.log, timeout=self.start_timeout, poll=self.poll)

    def kill9(self) -> None:
        assert self.proc is not None
        if self.kill9_group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_group(self.proc, timeout=self.stop_timeout)

    def close(self) -> None:
        """Delete every instance (while the worker runs), stop the worker and close the client."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.http.delete("/v2/vllm/instances")
        except httpx.HTTPError:
            pass
        self.stop()
        self.http.close()

    def wait_state(self, instance_id: str, state: str, timeout: float = 30.0, **fields: object) -> dict:
        """The instance's API answer once its ``state`` (and each of ``fields``) is as asked."""
        try:
            return wait_until(lambda: self.http.get(f"/v2/vllm/instances/{instance_id}").json(),
                              done=lambda body: body.get("state") == state
                              and all(body.get(k) == v for k, v in fields.items()),
                              timeout=max(timeout, 0.0), interval=0.1, what=f"{instance_id} to be {state}")
        except WaitTimeout as exc:
            raise AssertionError(f"{instance_id} never reached {state} {fields}: {exc.last}\n"
                                 f"{self.log.read_text()[-4000:]}") from None

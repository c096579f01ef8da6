"""Finding, starting and stopping the launcher daemon of one state directory.

:class:`DaemonHandle` talks to the daemon through its socket. ``ensure_running`` starts the
daemon when none answers (under a file lock, so two berth processes never start two), in a
session of its own so that it survives the berth process; ``shutdown`` asks it to stop every
instance and waits until it has exited.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

from berth.deployers._stdlib import proc
from berth.deployers._stdlib.run import argv_for
from berth.deployers.base import DeployerError, DeployerUnavailable
from berth.deployers.launcher import _protocol as proto
from berth.deployers.launcher import _records as rec
from berth.utils.waiting import WaitTimeout, wait_until

#: The daemon, run by path (see :mod:`berth.deployers.launcher.daemon`).
DAEMON_MODULE = "berth.deployers.launcher.daemon"
DAEMON_LOG = "daemon.log"
START_LOCK = "start.lock"
#: Longest Unix socket path the kernel accepts (``sun_path`` is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


class DaemonHandle:
    """The daemon serving ``state_dir``, started with ``python`` when needed."""

    def __init__(
        self,
        state_dir: str,
        *,
        python: str,
        preload: Sequence[str] = (),
        start_timeout: float = 180.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.state_dir = state_dir
        self.socket_path = os.path.join(state_dir, proto.SOCKET_NAME)
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise DeployerError(
                f"run_dir {state_dir!r} is too long for a Unix socket path "
                f"({len(self.socket_path)} > {MAX_SOCKET_PATH} bytes); choose a shorter run_dir"
            )
        self.python = python
        self.preload = list(preload)
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def call(self, op: str, **fields: Any) -> Any:
        """One request; ``OSError`` when no daemon answers, :class:`ProtocolError` on refusal."""
        return proto.call(self.socket_path, {"op": op, **fields}, timeout=self.request_timeout)

    def ping(self) -> dict[str, Any] | None:
        """The daemon's ``ping`` reply, or ``None`` when none answers."""
        if not os.path.exists(self.socket_path):
            return None
        try:
            return self.call("ping")
        except (OSError, proto.ProtocolError):
            return None

    def ensure_running(self) -> None:
        """Start the daemon unless one answers; raise :class:`DeployerUnavailable` if it fails."""
        if self.ping() is not None:
            return
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.state_dir, START_LOCK), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ping() is None:
                self._start()

    def _start(self) -> None:
        argv = argv_for(self.python, DAEMON_MODULE, self.state_dir, flags=("-u", "-s"))
        for module in self.preload:
            argv += ["--preload", module]
        with open(os.path.join(self.state_dir, DAEMON_LOG), "ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=self.state_dir,
            )
        self._wait_ready(self._process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        def answers() -> bool:
            if self.ping() is not None:
                return True
            code = process.poll()
            if code is not None:
                raise DeployerUnavailable(
                    f"the launcher daemon exited with code {code} while starting; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            return False

        try:
            wait_until(answers, timeout=max(self.start_timeout, 0.0), interval=0.1,
                       what="the launcher daemon to answer")
        except WaitTimeout:
            raise DeployerUnavailable(
                f"the launcher daemon did not answer within {self.start_timeout:.0f} s "
                f"(start_timeout); its log ends with:\n{self.log_tail()}"
            ) from None

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every instance and the daemon; wait for it to exit. ``False`` if none ran.

        A daemon that does not answer (hung, or too busy under load) is not trusted to stop
        itself: its process group and its instances' groups are signalled directly.
        """
        info = self.ping()
        pids = [int(info["pid"])] if info else proc.with_argv(DAEMON_MODULE, self.state_dir)
        if not pids:
            self._reap()
            return False
        if info is not None:
            try:
                self.call("shutdown", timeout=timeout)
            except (OSError, proto.ProtocolError):
                pass
            proc.wait_gone(pids[0], timeout + 10.0)
        _kill_leftovers(self.state_dir, pids, timeout)
        self._reap()
        return True

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                return
            self._process = None

    def log_tail(self, size: int = 4096) -> str:
        try:
            with open(os.path.join(self.state_dir, DAEMON_LOG), "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no daemon log)"


def _kill_leftovers(state_dir: str, daemon_pids: list[int], timeout: float) -> None:
    """SIGTERM, then SIGKILL, the daemon's group and every recorded instance group still alive."""
    groups = list(daemon_pids) + [r.pid for r in rec.list_records(state_dir) if r.alive and r.pid]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [g for g in groups if proc.send_group(g, sig)]
        if not alive:
            return
        for pid in alive:
            proc.wait_gone(pid, timeout if sig == signal.SIGTERM else 5.0)

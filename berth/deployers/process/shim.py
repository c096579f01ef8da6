"""A tiny per-container supervisor, in the manner of conmon or containerd-shim.

The process deployer runs ``python -I -P _stdlib/run.py berth.deployers.process.shim
WORKLOAD_DIR CONTAINER`` (by path and isolated, so that neither berth's upper layers nor
gpustack-runtime are imported: see :mod:`berth.deployers._stdlib`; the two arguments make ``ps``
show whose shim it is) and writes the rest of the launch spec as JSON to its stdin, so that the
environment, secrets included, never touches the disk::

    {"argv": [...], "executable": ..., "env": {...}, "cwd": ... or null}

The shim forks a daemon and reports on stdout, as one JSON line, whether the command started
(``{"ok": true, "pid": 123}``) or why not (``{"ok": false, "error": "..."}``). The daemon:

* leaves the deployer's session (``setsid``) and becomes a child subreaper, so descendants that
  lose their parent are re-parented to it rather than to init;
* points its stdout/stderr at the container's log (opened ``O_APPEND``) and starts the command
  in a session of its own, with that log as the command's stdout and stderr: the child writes
  the log itself, nothing is buffered or dropped in between;
* records pid, pgid, start times, exit code, signal and timestamps in ``<container>.state``;
* forwards SIGTERM/SIGINT/SIGHUP to the command's process group (a stop request);
* when the command exits, kills whatever is left of its group, session and descendants, as a
  container runtime does when a container's first process exits, waits for the last of them and
  records ``all_reaped`` (a subreaper with no child left has no descendant left), then exits
  itself: a stopping deployer waits for the shim's exit and searches no further.

Killing berth (even with SIGKILL) leaves shim and command running; a new deployer over the same
run directory reads the state files and adopts them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from berth.deployers._stdlib import proc
from berth.deployers._stdlib.files import redirect_stdio
from berth.deployers.process import _state as st

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_DIED = "the shim died before starting the command"


class Shim:
    """The daemon half: start the command, wait for it, record what happened."""

    def __init__(self, workload_dir: str, container: str, spec: dict[str, Any], report_fd: int) -> None:
        self.spec = spec
        self.report_fd = report_fd
        self.dir = workload_dir
        self.container = container
        self.state = st.ContainerState(shim_pid=os.getpid())
        self.child_pid: int | None = None
        # Kept for the shim's whole life: a collected Popen reaps its process in __del__,
        # which would steal the exit status from the waitpid loop below.
        self.child: subprocess.Popen[bytes] | None = None
        self.subreaper = False

    def run(self) -> None:
        os.setsid()
        self.state.shim_start = proc.start_time(os.getpid())
        self.subreaper = proc.become_subreaper()
        redirect_stdio(st.log_path(self.dir, self.container))
        for sig in _FORWARDED:
            signal.signal(sig, self._on_signal)
        if self._spawn():
            self._reap()
            if self.subreaper:  # every orphan came to us, and none is left
                self.state.all_reaped = True
                st.write_state(self.dir, self.container, self.state)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.state.stop_requested = True
        if self.child_pid is not None:
            proc.send_group(self.child_pid, signum)

    def _spawn(self) -> bool:
        spec = self.spec
        try:
            child = subprocess.Popen(
                spec["argv"],
                executable=spec["executable"],
                env=spec["env"],
                cwd=spec.get("cwd") or None,
                stdin=subprocess.DEVNULL,
                stdout=1,
                stderr=2,
                start_new_session=True,
            )
        except OSError as exc:
            self._fail_to_start(exc)
            return False
        self.child, self.child_pid = child, child.pid
        self.state.pid = self.state.pgid = child.pid
        self.state.pid_start = proc.start_time(child.pid)
        self.state.started_at = time.time()
        st.write_state(self.dir, self.container, self.state)
        self._report({"ok": True, "pid": child.pid})
        if self.state.stop_requested:  # a stop arrived while we were starting
            proc.send_group(child.pid, signal.SIGTERM)
        return True

    def _fail_to_start(self, exc: OSError) -> None:
        what = self.spec["argv"][0] if self.spec["argv"] else self.spec["executable"]
        self.state.error = f"cannot execute {what!r}: {exc.strerror or exc}"
        self.state.exit_code = 127 if exc.errno == errno.ENOENT else 126
        self.state.finished_at = time.time()
        st.write_state(self.dir, self.container, self.state)
        print(f"berth: {self.state.error}", file=sys.stderr, flush=True)
        self._report({"ok": False, "error": self.state.error})

    def _report(self, message: dict[str, Any]) -> None:
        if self.report_fd < 0:
            return
        try:
            os.write(self.report_fd, json.dumps(message).encode() + b"\n")
        except OSError:  # the front half is gone (its caller was killed): the command runs on
            pass
        os.close(self.report_fd)
        self.report_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid == self.child_pid:
                self._record_exit(status)
            if self.state.finished:
                self._kill_rest()

    def _record_exit(self, status: int) -> None:
        if os.WIFSIGNALED(status):
            self.state.signal = os.WTERMSIG(status)
            self.state.exit_code = 128 + self.state.signal
        else:
            self.state.exit_code = os.waitstatus_to_exitcode(status)
        self.state.finished_at = time.time()
        st.write_state(self.dir, self.container, self.state)

    def _kill_rest(self) -> None:
        if self.subreaper:  # every leftover is our descendant; ids of the dead child may recycle
            left = proc.members(root=os.getpid())
        else:
            left = proc.members(sid=self.child_pid, pgid=self.child_pid)
        proc.send(left, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Front half: read the spec, fork the daemon, relay its one-line report."""
    if len(argv) != 2:
        print("usage: shim.py WORKLOAD_DIR CONTAINER < spec.json", file=sys.stderr)
        return 2
    spec = json.loads(sys.stdin.buffer.read())
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:
        os.close(read_fd)
        code = 0
        try:
            Shim(argv[0], argv[1], spec, write_fd).run()
        except BaseException:  # noqa: BLE001 - the daemon must never unwind into the front's code
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        report = fh.readline().decode() or json.dumps({"ok": False, "error": _DIED})
    sys.stdout.write(report)
    return 0 if json.loads(report).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

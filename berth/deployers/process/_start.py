"""Starting a workload's shims without waiting for them.

``create`` checks everything a plan can get wrong first (name, commands, interpreters, working
directories, ports), then spawns one shim per container, hands it its launch spec through a pipe
and returns. The shim, a Python interpreter, takes tens of milliseconds to start on an idle
machine and far more on a busy one; nothing in a create needs to wait for it. Until a shim has
written its state, its container is ``pending``.

A :class:`Start` thread per workload then collects the shims' one-line reports. A shim that
reports a failure, dies without a report or does not report within ``start_timeout`` fails the
workload: the failure is that container's recorded state (written by the shim, or here for a shim
that could not), and the workload's other containers are stopped, so that half a workload never
runs on. ``delete`` waits for a workload's start first, so it never races a shim still starting.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from berth.deployers._stdlib import proc
from berth.deployers._stdlib.run import argv_for
from berth.deployers.base import DeployerError
from berth.deployers.process._spec import LaunchSpec
from berth.deployers.process._state import ContainerState, read_state, write_state
from berth.deployers.process._stop import Target, stop_targets

logger = logging.getLogger(__name__)

#: The supervisor program, run by path (see :mod:`berth.deployers._stdlib.run`).
SHIM_MODULE = "berth.deployers.process.shim"
#: Grace period for the containers of a workload that failed to start.
ROLLBACK_TIMEOUT = 2.0


@dataclass(slots=True)
class Spawned:
    """One container's shim, started; its report not read yet."""

    container: str
    popen: subprocess.Popen[bytes]


def spawn(python: str, workload_dir: str, spec: LaunchSpec) -> Spawned:
    """Start the shim of ``spec`` and write the spec to its stdin; does not wait for it."""
    payload = json.dumps(spec.to_shim()).encode()
    read_end, write_end = os.pipe()
    try:
        popen = subprocess.Popen(
            argv_for(python, SHIM_MODULE, workload_dir, spec.container),
            stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or killpg meant for berth must not hit a starting shim
        )
    except OSError as exc:
        os.close(write_end)
        raise DeployerError(f"container {spec.container!r}: cannot start its supervisor: {exc}") from exc
    finally:
        os.close(read_end)
    try:  # a spec larger than the pipe's buffer waits here for the shim to read it
        view = memoryview(payload)
        while view:
            view = view[os.write(write_end, view):]
    except BrokenPipeError:  # the shim died at once; its report (none) says so
        pass
    finally:
        os.close(write_end)
    return Spawned(spec.container, popen)


class Start(threading.Thread):
    """Waits for the reports of one workload's shims; fails the workload when one is bad."""

    def __init__(
        self, workload_dir: str, containers: Sequence[str], spawned: Sequence[Spawned], timeout: float,
        done: Callable[[Start], None],
    ) -> None:
        self.workload = os.path.basename(workload_dir)
        super().__init__(name=f"berth-start-{self.workload}", daemon=True)
        self.workload_dir = workload_dir
        self.containers = list(containers)
        self.spawned = list(spawned)
        self.timeout = timeout
        self._done = done

    def run(self) -> None:
        try:
            failure = collect(self.spawned, self.timeout)
            if failure is not None:
                self._fail(*failure)
        except Exception:  # noqa: BLE001 - a daemon thread: say what went wrong, never die silently
            logger.exception("starting %s failed unexpectedly", self.workload_dir)
        finally:
            self._done(self)

    def _fail(self, container: str, problem: str) -> None:
        logger.warning("workload %s: container %s did not start: %s", self.workload, container, problem)
        stop_all(self.workload_dir, self.containers)
        if read_state(self.workload_dir, container) is None:
            write_state(self.workload_dir, container, ContainerState(error=problem, finished_at=time.time()))


def collect(spawned: Sequence[Spawned], timeout: float) -> tuple[str, str] | None:
    """Wait up to ``timeout`` s in all for the shims' reports; the first failure as
    ``(container, why)``, or ``None`` when every command started."""
    deadline = time.monotonic() + timeout
    failure = None
    for shim in spawned:
        problem = _report(shim, deadline, timeout)
        if problem is not None and failure is None:
            failure = (shim.container, problem)
    return failure


def stop_all(workload_dir: str, containers: Sequence[str]) -> None:
    """Stop every container of a workload that did not start, shims still starting included
    (found by their command line, as they have written no state yet)."""
    for name in containers:
        if read_state(workload_dir, name) is None:
            proc.send(proc.with_argv(SHIM_MODULE, workload_dir, name), signal.SIGKILL)
    stop_targets([Target(workload_dir, c, read_state(workload_dir, c)) for c in containers], ROLLBACK_TIMEOUT)


def _report(shim: Spawned, deadline: float, timeout: float) -> str | None:
    """Wait for one shim's report until ``deadline`` (monotonic); why it failed, or ``None``
    when its command started."""
    try:
        out, err = shim.popen.communicate(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        shim.popen.kill()
        shim.popen.communicate()
        return f"its supervisor did not report within the start timeout ({timeout:g} s)"
    report = _parse_report(out)
    if report.get("ok"):
        return None
    detail = report.get("error") or err.decode(errors="replace").strip()[-2000:]
    return str(detail or "its supervisor failed")


def _parse_report(stdout: bytes) -> dict[str, object]:
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {}
    return report if isinstance(report, dict) else {}

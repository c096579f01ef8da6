"""Stopping a workload's processes so that nothing is left behind.

SIGTERM goes to each container's shim, which forwards it to the command's process group (or
straight to the group when the shim is gone). After the grace period, SIGKILL goes to the group
and to every straggler: members of the command's session, the shim's descendants, and any
process carrying the container's tag in its environment (a daemon that left both group and
session). Group and session ids are only trusted while the command itself is alive (verified by
its start time): once it is gone its pid may be recycled, so only tagged processes are taken.

Waiting costs nothing in the usual case: the shim is a subreaper, so every descendant of the
command is its descendant and it leaves only after reaping the last one, recording
``all_reaped``. The wait sleeps on the shim's exit (a pidfd) and reads that record. The search of
every process on the host (``/proc/*/stat`` and each process's environment) is the fallback for
a shim that is gone without that record: killed, or on a kernel without subreapers.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from berth.deployers._stdlib import proc
from berth.deployers.process._state import TAG_ENV, ContainerState, process_tag, read_state
from berth.utils.waiting import WaitTimeout, wait_until

#: How long to wait, after SIGKILL, for shims to record the exit and leave.
KILL_WAIT = 5.0
POLL = 0.05


@dataclass(slots=True)
class Target:
    """One container of a workload being stopped."""

    workload_dir: str
    container: str
    state: ContainerState | None

    @property
    def tag(self) -> tuple[str, str]:
        return TAG_ENV, process_tag(self.workload_dir, self.container)

    def shim_running(self) -> bool:
        return self.state is not None and proc.is_running(self.state.shim_pid, self.state.shim_start)

    def child_running(self) -> bool:
        return self.state is not None and proc.is_running(self.state.pid, self.state.pid_start)

    def leftovers(self) -> set[int]:
        """Every process still belonging to this container, shim excluded."""
        found: set[int] = set()
        if self.child_running() and self.state is not None:
            found |= proc.members(sid=self.state.pid, pgid=self.state.pid)
        if self.shim_running() and self.state is not None:
            found |= proc.members(root=self.state.shim_pid)
        found |= proc.members(tag=self.tag)
        if self.state is not None and self.state.shim_pid:
            found.discard(self.state.shim_pid)
        return found

    def quiet(self) -> bool:
        """Nothing of this container runs any more (cheap checks first; a search of ``/proc``
        only when the shim left without saying it reaped everything)."""
        if self.shim_running() or self.child_running():
            return False
        return self.all_reaped() or not self.leftovers()

    def all_reaped(self) -> bool:
        """Whether the shim recorded, as it left, that no descendant of it was left."""
        latest = read_state(self.workload_dir, self.container)
        if latest is not None:
            self.state = latest
        return latest is not None and latest.all_reaped

    def wait_shim(self, deadline: float) -> None:
        """Sleep until the shim exits or ``deadline`` (monotonic) passes; at once without a shim."""
        if self.shim_running() and self.state is not None and self.state.shim_pid:
            proc.wait_gone(self.state.shim_pid, deadline - time.monotonic(), POLL, start=self.state.shim_start)

    def terminate(self) -> None:
        """Ask politely: through the shim when it lives, so the stop is recorded."""
        if self.shim_running() and self.state is not None and self.state.shim_pid:
            proc.send([self.state.shim_pid], signal.SIGTERM)
        elif self.child_running() and self.state is not None:
            proc.send_group(self.state.pid, signal.SIGTERM)
        else:
            proc.send(self.leftovers(), signal.SIGTERM)

    def kill(self, *, shim_too: bool = False) -> None:
        if self.child_running() and self.state is not None:
            proc.send_group(self.state.pid, signal.SIGKILL)
        proc.send(self.leftovers(), signal.SIGKILL)
        if shim_too and self.shim_running() and self.state is not None and self.state.shim_pid:
            proc.send([self.state.shim_pid], signal.SIGKILL)


def stop_targets(targets: Sequence[Target], timeout: float) -> bool:
    """Stop every target; ``True`` when all ended within ``timeout`` without SIGKILL."""
    live = [t for t in targets if not t.quiet()]
    for target in live:
        target.terminate()
    if _wait_quiet(live, max(timeout, 0.0)):
        return True
    for target in live:
        target.kill()
    if not _wait_quiet(live, KILL_WAIT):
        for target in live:
            target.kill(shim_too=True)
        _wait_quiet(live, KILL_WAIT)
    return False


def _wait_quiet(targets: Sequence[Target], timeout: float) -> bool:
    """Whether every target went quiet within ``timeout`` s; each round first sleeps on the
    shims' exits (up to the deadline), then checks the targets still pending."""
    deadline = time.monotonic() + timeout
    pending = list(targets)

    def all_quiet() -> bool:
        nonlocal pending
        for target in pending:
            target.wait_shim(deadline)
        pending = [t for t in pending if not t.quiet()]
        return not pending

    try:
        wait_until(all_quiet, timeout=timeout, interval=POLL, what="the stopped containers to go quiet")
    except WaitTimeout:
        return False
    return True

"""Processes on this host: reading ``/proc``, signalling, subreaping, waiting.

Shared by the process deployer, its shim and the launcher daemon (standard library only; see
:mod:`berth.deployers._stdlib`).

A process is named by ``(pid, start)``, where ``start`` is its start time in clock ticks since
boot (``/proc/<pid>/stat`` field 22), so a recycled pid is never mistaken for the original.
"""

from __future__ import annotations

import os
import select
import signal as _signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PROC = "/proc"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that supervision needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start: int

    @property
    def zombie(self) -> bool:
        """Exited and waiting to be reaped (or a dead thread group): no longer runs."""
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or ``None`` when it does not exist (any more)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name is in parentheses and may itself contain spaces or parentheses
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start=int(fields[19]),
    )


def start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, ``None`` when it is gone or a zombie."""
    stat = read_stat(pid)
    if stat is None or stat.zombie:
        return None
    return stat.start


def is_running(pid: int | None, start: int | None) -> bool:
    """Whether ``pid`` is alive and is still the process that started at ``start``."""
    if not pid:
        return False
    now = start_time(pid)
    return now is not None and (start is None or now == start)


def iter_stats() -> Iterator[ProcStat]:
    """Every live process on the host (zombies excluded)."""
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is not None and not stat.zombie:
            yield stat


def descendants(root: int, stats: Iterable[ProcStat]) -> set[int]:
    """Pids of every live descendant of ``root`` (``root`` excluded)."""
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found and child != root:
                found.add(child)
                todo.append(child)
    return found


def has_env(pid: int, name: str, value: str) -> bool:
    """Whether process ``pid`` was started with ``name=value`` in its environment."""
    needle = f"{name}={value}".encode()
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as fh:
            entries = fh.read().split(b"\0")
    except OSError:
        return False
    return needle in entries


def mentioning(text: str) -> set[int]:
    """Live pids whose command line or environment contains ``text`` (tests, diagnostics)."""
    needle = text.encode()
    found: set[int] = set()
    for stat in iter_stats():
        for part in ("cmdline", "environ"):
            try:
                with open(f"{PROC}/{stat.pid}/{part}", "rb") as fh:
                    if needle in fh.read():
                        found.add(stat.pid)
                        break
            except OSError:
                continue
    found.discard(os.getpid())
    return found


def members(
    *,
    sid: int | None = None,
    pgid: int | None = None,
    root: int | None = None,
    tag: tuple[str, str] | None = None,
) -> set[int]:
    """Live pids in session ``sid``, group ``pgid``, below ``root``, or carrying env ``tag``."""
    stats = list(iter_stats())
    found = {s.pid for s in stats if (sid and s.sid == sid) or (pgid and s.pgid == pgid)}
    if root:
        found |= descendants(root, stats)
    if tag is not None:
        found |= {s.pid for s in stats if s.pid not in found and has_env(s.pid, *tag)}
    found.discard(os.getpid())
    return found


def send(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each pid, ignoring ones that already exited."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def send_group(pgid: int | None, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; ``False`` when the group no longer exists.

    A group this process may not signal still exists: ``True``, nothing sent.
    """
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_gone(pid: int, timeout: float, poll: float = 0.05, *, start: int | None = None) -> bool:
    """Wait until ``pid`` (the process that started at ``start``, when given) no longer runs:
    gone or a zombie. ``False`` after ``timeout`` s.

    Sleeps on a pidfd where the kernel has them (Linux 5.3+), which wakes the moment the process
    exits, whoever its parent is; elsewhere it polls every ``poll`` s.
    """
    deadline = time.monotonic() + timeout
    fd = _pidfd(pid)
    try:
        while is_running(pid, start):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if fd is None:
                time.sleep(min(poll, left))
            elif _readable(fd, left):  # it exited; a pidfd stays readable, so poll from here on
                os.close(fd)
                fd = None
    finally:
        if fd is not None:
            os.close(fd)
    return True


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, ``None`` where there is none (old kernel, not Linux, no such pid).

    Taken before the liveness check that follows it, so a recycled pid is never waited on: the
    caller checks the start time after opening.
    """
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` became readable within ``timeout`` s."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000) + 1)))


def with_argv(*parts: str) -> list[int]:
    """Live pids whose command line holds every one of ``parts`` as a whole argument."""
    wanted = [os.fsencode(part) for part in parts]
    found = []
    for stat in iter_stats():
        try:
            with open(f"{PROC}/{stat.pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if all(part in argv for part in wanted):
            found.append(stat.pid)
    return found


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # not Linux


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux only).

    ``False`` where the kernel offers no such thing; orphans then go to init, and scans by
    session, group or environment tag still find them.
    """
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent_pid: int, sig: int = _signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only).

    Checks the parent afterwards: one that died before the request took effect is acted on now.
    """
    if _prctl(_PR_SET_PDEATHSIG, sig) and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def signal_name(sig: int | None) -> str:
    """``9`` -> ``SIGKILL``; unknown numbers as ``signal 64``."""
    if sig is None:
        return "no signal"
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"

"""Whether a test's processes still live, asked one way for every suite (read from ``/proc`` and ``kill -0``)."""

from __future__ import annotations

import os

from berth.deployers._stdlib import proc

__all__ = ["alive", "exists", "group_exists"]


def exists(pid: int) -> bool:
    """Whether ``pid`` exists at all, a zombie that nobody reaped yet included (``kill -0``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int | None) -> bool:
    """Whether ``pid`` exists and still runs (a zombie does not)."""
    return pid is not None and proc.start_time(pid) is not None


def group_exists(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid``."""
    return proc.send_group(pgid, 0)

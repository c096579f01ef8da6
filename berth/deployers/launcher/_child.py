"""The first moments of a forked instance: from a copy of the daemon to a vLLM server.

:func:`become_instance` runs in the child right after ``fork`` and never returns. In order it
makes the child a process group of its own (so a stop reaches vLLM's engine core and workers
too), asks the kernel to SIGTERM it if the daemon dies, closes the daemon's sockets, points
stdin at ``/dev/null`` and stdout/stderr at the instance's log (``O_APPEND``; the daemon runs
unbuffered, so every write lands at once), restores default signal handling, replaces the
environment with the instance's, changes directory, runs vLLM's server, runs exit handlers and
leaves with ``os._exit``. Standard library only (see :mod:`berth.deployers._stdlib`).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from berth.deployers._stdlib.files import redirect_stdio
from berth.deployers._stdlib.proc import die_with_parent

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGUSR1)


def become_instance(
    *,
    log_path: str,
    env: Mapping[str, str],
    cwd: str | None,
    closeables: Iterable[Any],
    daemon_pid: int,
    run: Callable[[], None],
) -> NoReturn:
    """Turn this freshly forked process into the instance and run ``run()``; never returns."""
    code = 1
    try:
        os.setpgrp()
        die_with_parent(daemon_pid)
        _close_all(closeables)
        redirect_stdio(log_path)
        _reset_signals()
        _replace_env(env)
        if cwd:
            os.chdir(cwd)
        code = _run(run)
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        traceback.print_exc()
    _exit(code)


def _close_all(closeables: Iterable[Any]) -> None:
    """Close the daemon's sockets, selector and lock through their objects, then any other
    inherited socket by number."""
    for item in closeables:
        try:
            item.close()
        except OSError:
            pass
    for fd in _socket_fds():
        try:
            os.close(fd)
        except OSError:
            pass


def _socket_fds() -> list[int]:
    found = []
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for entry in entries:
        fd = int(entry)
        try:
            if fd > 2 and os.readlink(f"/proc/self/fd/{entry}").startswith("socket:"):
                found.append(fd)
        except OSError:
            continue
    return found


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python program
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _replace_env(env: Mapping[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


def _run(run: Callable[[], None]) -> int:
    try:
        run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return 0
    return 0


def _exit(code: int) -> NoReturn:
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)

"""Starting and stopping a real ``berth serve`` subprocess (one way, for every test suite and benchmark).

:func:`stop_group` also stops any other process started in a session of its own (``vllm serve``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

__all__ = ["spawn_serve", "stop_group", "wait_healthy"]


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(poll)
    raise AssertionError(f"berth serve did not answer /health in {timeout:.0f} s:\n" + log.read_text())


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

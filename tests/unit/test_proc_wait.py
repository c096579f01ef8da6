"""Waiting for a process to end (:func:`berth.deployers._stdlib.proc.wait_gone`): on a pidfd,
which wakes at the exit of any process, not only a child; a recycled pid is never waited on."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from berth.deployers._stdlib import proc

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


def test_wakes_at_the_exit_not_at_the_next_poll() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    start = proc.start_time(sleeper.pid)
    killer = threading.Timer(0.2, sleeper.kill)
    killer.start()
    try:
        began = time.monotonic()
        assert proc.wait_gone(sleeper.pid, 30.0, poll=10.0, start=start)  # a poll of 10 s would show
        assert time.monotonic() - began < 5.0
    finally:
        killer.cancel()
        sleeper.kill()
        sleeper.wait()


def test_gives_up_at_the_timeout() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        assert not proc.wait_gone(sleeper.pid, 0.2, start=proc.start_time(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_process_under_the_same_pid_is_not_waited_on() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        start = proc.start_time(sleeper.pid)
        assert start is not None
        began = time.monotonic()
        assert proc.wait_gone(sleeper.pid, 30.0, start=start + 1)  # as if the pid had been recycled
        assert time.monotonic() - began < 5.0
    finally:
        sleeper.kill()
        sleeper.wait()

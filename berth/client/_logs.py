"""Server logs for people: forwarded live when ``verbose``, and the tail quoted when a start
fails. Secrets are masked in both, by the worker's rule (:mod:`berth.utils.secrets`): the
values of secret-looking environment variables and of secret-looking options (``--api-key``)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TextIO

from berth.deployers import Deployer, DeployerError, WorkloadNotFound
from berth.utils.backoff import Backoff
from berth.utils import secrets as _secrets
from berth.utils.secrets import redact_text

logger = logging.getLogger(__name__)

#: Bytes of log quoted in a start failure.
TAIL_BYTES = 4000
#: After a failed read the forwarder waits this long, doubling per failure up to the cap.
RETRY_INITIAL_S = 0.25
RETRY_MAX_S = 5.0
#: The forwarder gives up after this long without one successful read.
GIVE_UP_S = 300.0


def secret_values(*envs: Mapping[str, str], args: Iterable[str] = ()) -> list[str]:
    """Secret values (longest first) of a server's ``envs`` and its options ``args``, by the
    worker's rule: secret-looking env names (``HF_TOKEN``), secret-looking options (``--api-key``)."""
    return _secrets.secret_values(envs=envs, args=args)


def log_tail(deployer: Deployer, name: str, secrets: Iterable[str], limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the server's log, masked; empty when there is none."""
    try:
        total = deployer.logs(name, start=1 << 62).total
        chunk = deployer.logs(name, start=max(0, total - limit))
    except DeployerError:
        return ""
    return redact_text(chunk.data.decode(errors="replace"), secrets)


class LogForwarder:
    """Copies one server's log to ``stream`` line by line, prefixed, from a daemon thread.

    It follows until the server ends, its workload is gone, or :meth:`stop`. A failed read (the
    deployer's helper restarting, say) does not end it: it waits (``retry_initial`` s, doubling
    up to ``retry_max``) and follows again from the byte where it was, so no line is lost or
    repeated. After ``give_up`` s without one good read it says so on ``stream`` and ends.
    """

    def __init__(self, deployer: Deployer, name: str, prefix: str, secrets: list[str],
                 stream: TextIO | None = None, *, retry_initial: float = RETRY_INITIAL_S,
                 retry_max: float = RETRY_MAX_S, give_up: float = GIVE_UP_S) -> None:
        self._deployer = deployer
        self._name = name
        self._prefix = prefix
        self._secrets = secrets
        self._stream = stream or sys.stderr
        self._retry = (retry_initial, retry_max, give_up)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"berth-log-{name}", daemon=True)
        self._offset = 0
        self._pending = b""

    def start(self) -> LogForwarder:
        self._thread.start()
        return self

    def _run(self) -> None:
        initial, maximum, give_up = self._retry
        backoff, failing_since = Backoff(initial, maximum), None
        while not self._stop.is_set():
            began, offset = time.monotonic(), self._offset
            try:
                self._follow()
                break  # the server ended, or stop()
            except WorkloadNotFound:
                break  # gone, and its log with it
            except DeployerError as exc:
                now = time.monotonic()
                if self._offset != offset or now - began >= maximum:  # it worked for a while
                    backoff.reset()
                    failing_since = None
                failing_since = failing_since or now
                if now - failing_since >= give_up:
                    self._write(f"log forwarding stopped after {give_up:g} s of failed reads: {exc}".encode())
                    break
                delay = backoff.next()
                logger.debug("reading the log of %s failed (%s); again in %.2f s from byte %d",
                             self._name, exc, delay, self._offset)
                self._stop.wait(delay)
        if self._pending:
            self._write(self._pending)

    def _follow(self) -> None:
        for data in self._deployer.follow(self._name, start=self._offset, stop=self._stop):
            self._offset += len(data)
            *lines, self._pending = (self._pending + data).split(b"\n")
            for line in lines:
                self._write(line)

    def _write(self, line: bytes) -> None:
        text = redact_text(line.decode(errors="replace"), self._secrets)
        self._stream.write(f"{self._prefix} {text}{os.linesep}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

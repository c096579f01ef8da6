"""Server logs for people: forwarded live when ``verbose``, and the tail quoted when a start
fails. Values of secret-looking environment variables are masked in both."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO

from berth.deployers import Deployer, DeployerError
from berth.utils.env import MASK, is_secret_name


#: Bytes of log quoted in a start failure.
TAIL_BYTES = 4000


def secret_values(*envs: Mapping[str, str]) -> list[str]:
    """Values of secret-looking variables (``HF_TOKEN`` ...) in ``envs``, longest first."""
    found = {v for env in envs for k, v in env.items() if v and len(v) >= 4 and is_secret_name(k)}
    return sorted(found, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        text = text.replace(value, MASK)
    return text


def log_tail(deployer: Deployer, name: str, secrets: Iterable[str], limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the server's log, masked; empty when there is none."""
    try:
        total = deployer.logs(name, start=1 << 62).total
        chunk = deployer.logs(name, start=max(0, total - limit))
    except DeployerError:
        return ""
    return mask(chunk.data.decode(errors="replace"), secrets)


class LogForwarder:
    """Copies one server's log to ``stream`` line by line, prefixed, from a daemon thread."""

    def __init__(self, deployer: Deployer, name: str, prefix: str, secrets: list[str],
                 stream: TextIO | None = None) -> None:
        self._deployer = deployer
        self._name = name
        self._prefix = prefix
        self._secrets = secrets
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"berth-log-{name}", daemon=True)

    def start(self) -> LogForwarder:
        self._thread.start()
        return self

    def _run(self) -> None:
        pending = b""
        try:
            for data in self._deployer.follow(self._name, stop=self._stop):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._write(line)
        except DeployerError:
            pass
        if pending:
            self._write(pending)

    def _write(self, line: bytes) -> None:
        text = mask(line.decode(errors="replace"), self._secrets)
        self._stream.write(f"{self._prefix} {text}{os.linesep}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

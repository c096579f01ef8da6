"""``berth --worker URL logs -f``: follow an instance's log through the worker's API by byte
offset, so no byte is lost or printed twice, even across a restart of the worker.

* New bytes are asked for with ``Range: bytes=OFFSET-``. A log that has not grown is asked again
  after 0.25 s, then less and less often (up to every 2 s); at once after it grew.
* While the worker does not answer (restarting, overloaded, a 5xx), one line on stderr says so
  and the read is retried from the same offset, after 0.5 s and then up to every 5 s.
* A log shorter than the offset (the instance's log was started over) is followed again from its
  start, with a note.
* It ends once the instance has stopped (after its last bytes) or was deleted.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from berth.cli._app import err_console
from berth.cli._remote import Reply, WorkerAPI, WorkerUnreachable
from berth.utils.backoff import Backoff
from berth.utils.worker_api import quoted

#: Seconds between reads of a log that did not grow: first, last (each wait is 1.5 times the one before).
IDLE_S = (0.25, 2.0)
IDLE_FACTOR = 1.5
#: Seconds between tries while the worker does not answer: first, last (doubling).
RETRY_S = (0.5, 5.0)


class _Step(enum.Enum):
    GREW = "grew"
    IDLE = "idle"
    ENDED = "ended"


class _Gone(Exception):
    """The instance was deleted."""


def content_total(reply: Reply) -> int | None:
    """TOTAL of a ``Content-Range: bytes ...-.../TOTAL`` (or ``*/TOTAL``) header."""
    value = {k.lower(): v for k, v in reply.headers.items()}.get("content-range", "")
    total = value.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _note(text: str) -> None:
    """One line on stderr (stdout carries the log's bytes only)."""
    err_console.print(f"berth: {text}", highlight=False, soft_wrap=True, markup=False)


class LogFollow:
    """Prints one instance's log from ``offset`` on as it grows; :meth:`run` until it ends."""

    def __init__(self, api: WorkerAPI, instance_id: str, container: str = "default", offset: int = 0,
                 out: BinaryIO | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.instance_id = instance_id
        self.offset = offset
        self._log = api.log_path(instance_id, container)
        self._view = f"/v2/instances/{quoted(instance_id)}"
        self._out = out or sys.stdout.buffer
        self._sleep = sleep
        self._outage = False

    def run(self) -> None:
        self.api.call("GET", self._view)  # an unknown id is an error, not an empty log
        idle, retry = Backoff(*IDLE_S, factor=IDLE_FACTOR), Backoff(*RETRY_S)
        while True:
            try:
                step = self._step()
            except WorkerUnreachable as exc:
                self._lost(exc)
                self._sleep(retry.next())
                continue
            self._back()
            retry.reset()
            if step is _Step.ENDED:
                return
            if step is _Step.GREW:
                idle.reset()
                continue
            self._sleep(idle.next())

    def _step(self) -> _Step:
        try:
            if self._read():
                return _Step.GREW
            if not self._stopped():
                return _Step.IDLE
            while self._read():  # what it wrote before it stopped
                pass
        except _Gone:
            pass
        return _Step.ENDED

    def _read(self) -> bool:
        """Print what the log holds past the offset (at most 1 MiB); whether there was anything."""
        reply = self._get(self._log, {"Range": f"bytes={self.offset}-"})
        if reply.status == 206 and reply.body:
            self._out.write(reply.body)
            self._out.flush()
            self.offset += len(reply.body)
            return True
        total = content_total(reply)
        if reply.status == 416 and total is not None and total < self.offset:
            _note(f"the log of {self.instance_id} holds {total} bytes, fewer than the {self.offset} printed "
                  f"(it was started over); following it from its start")
            self.offset = 0
            return True
        if reply.status in (206, 416):
            return False
        raise self.api.error("GET", self._log, reply)

    def _stopped(self) -> bool:
        return self._get(self._view).json().get("status") == "stopped"

    def _get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        """One GET; 404 is :class:`_Gone`, a 5xx as retryable as no answer."""
        reply = self.api.request("GET", path, headers=headers)
        if reply.status == 404:
            raise _Gone
        if reply.status >= 500:
            raise WorkerUnreachable(f"the worker at {self.api.url} answered {reply.status}")
        return reply

    def _lost(self, exc: WorkerUnreachable) -> None:
        if not self._outage:
            _note(f"{exc}; will resume at byte {self.offset} once it answers")
        self._outage = True

    def _back(self) -> None:
        if self._outage:
            _note(f"the worker answers again; resuming at byte {self.offset}")
        self._outage = False

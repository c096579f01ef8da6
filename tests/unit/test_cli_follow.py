"""``berth --worker URL logs -f`` (:class:`berth.cli._remote_follow.LogFollow`) against a scripted
worker: every byte once across 5xx answers and a worker that does not answer, a log started
over, waits that grow while nothing happens, and an unknown id."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from berth.cli._app import CLIError
from berth.cli._remote import Reply, WorkerAPI, WorkerUnreachable
from berth.cli._remote_follow import IDLE_S, RETRY_S, LogFollow

Action = Callable[["ScriptedWorker"], None]


class ScriptedWorker(WorkerAPI):
    """A worker whose log, status and failures the test sets; answers 4 bytes at a time."""

    def __init__(self, log: bytes = b"") -> None:
        super().__init__("http://127.0.0.1:9")
        self.log = log
        self.status = "running"
        self.failures: list[int | None] = []  # next answers: a status code, or None for no answer
        self.exists = True

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> Reply:
        if self.failures:
            failure = self.failures.pop(0)
            if failure is None:
                raise WorkerUnreachable("no berth worker answering (connection refused)")
            return Reply(failure, {}, b'{"detail": "busy"}')
        if not self.exists:
            return Reply(404, {}, b'{"detail": "instance not found"}')
        if not path.endswith("/log"):
            return Reply(200, {}, json.dumps({"status": self.status}).encode())
        start = int((headers or {})["Range"].removeprefix("bytes=").removesuffix("-"))
        if start >= len(self.log):
            return Reply(416, {"Content-Range": f"bytes */{len(self.log)}"}, b"")
        data = self.log[start:start + 4]
        return Reply(206, {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{len(self.log)}"}, data)


def follow(worker: ScriptedWorker, actions: list[Action]) -> tuple[bytes, list[float]]:
    """Run a follow; each wait applies the next action. Returns what it printed and its waits."""
    out, waits = io.BytesIO(), []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        assert len(waits) < 200, "the follow never ended"
        if actions:
            actions.pop(0)(worker)

    LogFollow(worker, "f-1", out=out, sleep=wait).run()
    return out.getvalue(), waits


def grow(data: bytes) -> Action:
    def action(worker: ScriptedWorker) -> None:
        worker.log += data
    return action


def fail(*answers: int | None) -> Action:
    def action(worker: ScriptedWorker) -> None:
        worker.failures += list(answers)
    return action


def stop(last: bytes) -> Action:
    def action(worker: ScriptedWorker) -> None:
        worker.log += last
        worker.status = "stopped"
    return action


def test_every_byte_once_across_failures():
    worker = ScriptedWorker(b"starting\n")
    printed, waits = follow(worker, [grow(b"one\n"), fail(503, None, None, 502), grow(b"two\n"), fail(None),
                                     stop(b"last words\n")])
    assert printed == worker.log == b"starting\none\ntwo\nlast words\n"
    assert RETRY_S[0] in waits and RETRY_S[0] * 2 in waits  # retries back off


def test_deleted_instance_ends_the_follow():
    worker = ScriptedWorker(b"a\n")

    def delete(w: ScriptedWorker) -> None:
        w.exists = False

    assert follow(worker, [delete]) == (b"a\n", [IDLE_S[0]])


def test_a_log_started_over_is_followed_from_its_start():
    worker = ScriptedWorker(b"first life\n")

    def restart(w: ScriptedWorker) -> None:
        w.log = b"new\n"

    printed, _ = follow(worker, [restart, stop(b"end\n")])
    assert printed == b"first life\nnew\nend\n"


def test_waits_grow_while_nothing_happens():
    worker = ScriptedWorker(b"x")
    idle: list[Action] = [lambda w: None] * 12
    _, waits = follow(worker, [*idle, stop(b"")])
    assert waits[0] == IDLE_S[0] and waits == sorted(waits) and waits[-1] == IDLE_S[1]


def test_unknown_instance_is_an_error():
    worker = ScriptedWorker()
    worker.exists = False
    with pytest.raises(CLIError, match="404"):
        follow(worker, [])

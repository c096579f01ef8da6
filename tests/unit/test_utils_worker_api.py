"""berth.utils.worker_api: one client of the worker's API for the CLI, the demo and the Python
client; one error mapping (the worker's detail, the 401 hint, an unreachable worker by URL)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from berth.utils.waiting import WaitTimeout
from berth.utils.worker_api import (
    WorkerAPI,
    WorkerAPIError,
    WorkerUnreachable,
    error_detail,
)

TOKEN = "w-token-123"


class _Worker(BaseHTTPRequestHandler):
    views: ClassVar[dict[str, dict]] = {}
    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def _answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Range"), body))
        if self.path == "/health":
            return self._answer(200, {"status": "ok"})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"detail": "missing or wrong token"})
        if self.path == "/v2/instances" and self.command == "POST":
            return self._answer(201, {"instance_id": json.loads(body)["name"]})
        if self.path == "/v2/instances":
            return self._answer(200, {"instances": list(self.views.values())})
        if self.path == "/v2/boom":
            return self._answer(500, b"<html>oops</html>")
        if self.path.startswith("/v2/instances/a%2Fb/log"):
            return self._answer(206, b"tail", {"Content-Range": "bytes 6-9/10"})
        instance = self.path.removeprefix("/v2/instances/")
        if instance in self.views:
            view = self.views[instance]
            if self.command == "DELETE":
                return self._answer(200, {"stopped": instance})
            view["polls"] = view.get("polls", 0) + 1
            if view["polls"] >= 3:
                view["ready"] = True
            return self._answer(200, view)
        return self._answer(404, {"detail": f"instance {instance!r} not found"})

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def worker() -> Iterator[str]:
    _Worker.views = {"one": {"instance_id": "one", "state": "starting"}}
    _Worker.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_calls_send_the_token_and_decode_json(worker):
    api = WorkerAPI(worker, TOKEN)
    assert api.url == worker.rstrip("/") and TOKEN not in repr(api)
    assert api.health()
    assert api.create({"name": "two"}) == {"instance_id": "two"}
    assert _Worker.seen[-1][3] == b'{"name": "two"}'
    assert [v["instance_id"] for v in api.instances()] == ["one"]
    assert api.delete("one") == {"stopped": "one"}
    assert api.models() == []  # a 404 there: model swapping off


def test_errors_carry_the_workers_detail_and_the_token_hint(worker):
    api = WorkerAPI(worker, TOKEN)
    with pytest.raises(WorkerAPIError, match=r"GET .*/v2/instances/nope answered HTTP 404: instance 'nope' not found") as caught:
        api.instance("nope")
    assert caught.value.status == 404 and caught.value.detail == "instance 'nope' not found"
    with pytest.raises(WorkerAPIError, match=r"HTTP 500: <html>oops</html>"):
        api.call("GET", "/v2/boom")
    with pytest.raises(WorkerAPIError, match=r"HTTP 401; set THE_TOKEN \(missing or wrong token\)"):
        WorkerAPI(worker, token_hint="set THE_TOKEN").instances()
    with pytest.raises(WorkerAPIError, match="refused the token given"):
        WorkerAPI(worker, "wrong").instances()


def test_an_unreachable_worker_is_named_by_url():
    with socket.socket() as held:  # bound, not listening: connecting is refused
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        api = WorkerAPI(url, unreachable_hint="is it running?")
        with pytest.raises(WorkerUnreachable, match=f"no berth worker answering at {url} .*; is it running") as caught:
            api.instances()
        assert isinstance(caught.value, ConnectionError)
        assert not api.health()


def test_logs_by_range_and_ids_quoted_as_one_segment(worker):
    api = WorkerAPI(worker, TOKEN)
    reply = api.log_range("a/b", "bytes=6-")
    assert (reply.status, reply.body, _Worker.seen[-1][1:3]) == (206, b"tail", ("/v2/instances/a%2Fb/log", "bytes=6-"))
    assert api.log_path("x", "ray-head") == "/v2/instances/x/log?container=ray-head"
    with pytest.raises(WorkerAPIError, match="404"):
        api.log_range("zzz", None)


def test_wait_settled_polls_until_ready(worker):
    api, seen = WorkerAPI(worker, TOKEN), []
    view = api.wait_settled("one", 10, interval=0.01, on_wait=lambda v, t: seen.append(v["polls"]))
    assert view["ready"] and seen == [1, 2]
    _Worker.views["slow"] = {"state": "loading", "polls": -1000}
    with pytest.raises(WaitTimeout, match="waiting for instance slow") as caught:
        api.wait_settled("slow", 0.05, interval=0.01)
    assert caught.value.last["state"] == "loading"


def test_subclasses_choose_their_error_types(worker):
    class Mine(WorkerAPIError):
        pass

    class MineGone(WorkerUnreachable, Mine):
        pass

    class API(WorkerAPI):
        error_type = Mine
        unreachable_type = MineGone

    with pytest.raises(Mine, match="404"):
        API(worker, TOKEN).instance("nope")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        with pytest.raises(MineGone, match="no berth worker answering"):
            API(f"http://127.0.0.1:{held.getsockname()[1]}").instances()


def test_bad_urls_and_odd_bodies():
    with pytest.raises(ValueError, match="not an http"):
        WorkerAPI("localhost:8001")
    assert error_detail(b'{"detail": [{"loc": ["body"], "msg": "bad"}]}') == '[{"loc": ["body"], "msg": "bad"}]'
    assert error_detail(b"") == "(empty body)"
    assert error_detail(b'{"error": "x"}') == '{"error": "x"}'

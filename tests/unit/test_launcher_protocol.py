"""The launcher daemon's wire protocol and its request loop, without vLLM."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from berth.deployers.launcher import _protocol as proto
from berth.deployers.launcher import _vllm as engine
from berth.deployers.launcher import daemon as daemon_mod


def test_encode_decode_round_trip() -> None:
    message = {"op": "create", "args": ["--x", '{"a": 1}'], "env": {"K": "v w"}}
    line = proto.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert proto.decode(line[:-1]) == message


def test_decode_refuses_non_objects() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        proto.decode(b"[1, 2]")


def test_unwrap_ok_and_error() -> None:
    assert proto.unwrap(proto.ok({"pid": 3})) == {"pid": 3}
    with pytest.raises(proto.ProtocolError) as info:
        proto.unwrap(proto.error("exists", "taken"))
    assert info.value.kind == "exists" and str(info.value) == "taken"
    assert proto.error("weird", "x")["error"] == "internal"


def test_read_line_across_chunks_and_hangup() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b'{"a"')
        right.sendall(b':1}\nrest')
        assert proto.read_line(left) == b'{"a":1}'
        right.close()
        with pytest.raises(ConnectionError):
            proto.read_line(left)


@pytest.fixture()
def daemon(tmp_path):
    state_dir = str(tmp_path)
    lock = open(os.path.join(state_dir, daemon_mod.LOCK_NAME), "a+")  # noqa: SIM115
    d = daemon_mod.Daemon(state_dir, parser=None, lock=lock)  # type: ignore[arg-type]
    yield d
    d.close()
    lock.close()


def test_daemon_answers_over_its_socket(daemon) -> None:
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            for _ in daemon.selector.select(timeout=0.05):
                daemon._accept()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        sock_path = os.path.join(daemon.state_dir, proto.SOCKET_NAME)
        assert proto.call(sock_path, {"op": "ping"})["pid"] == os.getpid()
        assert proto.call(sock_path, {"op": "list"}) == {"instances": []}
        with pytest.raises(proto.ProtocolError) as info:
            proto.call(sock_path, {"op": "status", "name": "nope"})
        assert info.value.kind == "not_found" and "nope" in str(info.value)
    finally:
        done.set()
        thread.join()


def test_daemon_refuses_bad_requests(daemon) -> None:
    assert daemon.handle({"op": "fly"})["error"] == "invalid"
    bad_name = daemon.handle({"op": "create", "name": "../etc", "log": "/x"})
    assert bad_name["error"] == "invalid" and "not allowed" in bad_name["message"]
    no_log = daemon.handle({"op": "create", "name": "a"})
    assert no_log["error"] == "invalid" and "'log'" in no_log["message"]


def test_daemon_reports_vllm_parser_refusal(daemon, monkeypatch, tmp_path) -> None:
    def refuse(parser, args):
        raise engine.ServeArgsError("unrecognized arguments: --bogus")

    monkeypatch.setattr(daemon_mod.engine, "parse_serve_args", refuse)
    reply = daemon.handle({"op": "create", "name": "a", "args": ["--bogus"], "log": str(tmp_path / "a.log")})
    assert reply == {
        "ok": False,
        "error": "invalid",
        "message": "vLLM refused the options of 'a': unrecognized arguments: --bogus",
    }
    assert daemon.instances == {}


def test_daemon_refuses_creates_while_shutting_down(daemon, tmp_path) -> None:
    assert daemon.begin_shutdown(1.0) == 0
    reply = daemon.handle({"op": "create", "name": "a", "log": str(tmp_path / "a.log")})
    assert reply["error"] == "unsupported"

"""Request bodies through the `/v1/*` router: bounded by `max_inference_body_bytes`, not by the
control API's `max_body_bytes`; streamed to the engine when a header routes them; refused with 413
in OpenAI's shape past the bound, the engine's request then closed. A real worker (uvicorn,
memory deployer) in front of a stand-in engine on loopback that hashes what it receives."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.routing._router import ROUTER_PREFIX, inference
from berth.worker.store._states import InstanceState
from tests.support.ports import free_port

MiB = 1 << 20
#: The worker's inference bound here: above the 5 MiB bodies that must pass, below what must not.
BOUND = 8 * MiB
HEADER = "X-GPUStack-Model-Instance"
#: How long a test waits for something that happens within milliseconds when all is well.
WAIT_S = 20.0


class StandInEngine:
    """An engine's HTTP surface reduced to what these tests read: every request's body is hashed as
    it arrives, the first bytes and a hang-up by the proxy are signalled."""

    def __init__(self) -> None:
        self.first_bytes = threading.Event()
        self.hung_up = threading.Event()
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        self.requests += 1
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.hung_up.set()
                return
            body = message.get("body", b"")
            if body:
                self.first_bytes.set()
            digest.update(body)
            size += len(body)
            if not message.get("more_body"):
                break
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        answer = json.dumps({"size": size, "sha256": digest.hexdigest(), "path": scope["path"],
                             "content_length": headers.get("content-length"),
                             "chunked": headers.get("transfer-encoding") == "chunked"}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


def _serve(app, port: int, **options) -> tuple[uvicorn.Server, threading.Thread]:
    # log_config=None: uvicorn's loggers propagate, so caplog sees any traceback it would print.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "a loopback server did not start"
    return server, thread


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict]:
    probe, engine = FakeProbe(), StandInEngine()
    first = free_port()
    settings = Settings.load(data_dir=tmp_path_factory.mktemp("bodies") / "data", poll_interval=0.05,
                             instance_port_range=f"{first}-{min(first + 50, 65535)}",
                             max_inference_body_bytes=BOUND)
    manager = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe)
    app = create_app(manager)
    app.state.services.header_routes[HEADER] = lambda value: "base" if value == "model-tiny-1.main" else None
    port = free_port()
    servers = [_serve(app, port)]
    http_client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60)
    try:
        created = http_client.put("/v2/vllm/instances/base", json={"options": "--model /m --served-model-name tiny"})
        assert created.status_code == 201, created.text
        engine_port = manager.get("base").ports["http"]
        servers.append(_serve(engine, engine_port, lifespan="off"))
        probe.ready.add(f"http://127.0.0.1:{engine_port}")
        _wait_running(manager, "base")
        yield {"http": http_client, "port": port, "engine": engine, "app": app}
    finally:
        http_client.close()
        for server, thread in servers:
            server.should_exit = True
            thread.join(timeout=WAIT_S)


def _wait_running(manager: ServeManager, instance_id: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if manager.get(instance_id).state is InstanceState.RUNNING:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance_id} never ran: {manager.get(instance_id)}")


def _chat_body(size: int) -> bytes:
    """A chat request of ``size`` bytes or a little more: a long prompt, as a long context sends it."""
    return json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * size}]}).encode()


def _routed() -> dict[str, str]:
    return {HEADER: "model-tiny-1.main", "content-type": "application/json"}


def _chunks(body: bytes, size: int = MiB) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def _too_large(response: httpx.Response | http.client.HTTPResponse, text: bytes | None = None) -> dict:
    """The 413 in the router's shape: OpenAI's error, berth's detail beside it."""
    status = response.status_code if isinstance(response, httpx.Response) else response.status
    body = json.loads(text if text is not None else response.read())
    assert status == 413, body
    assert set(body) == {"error", "detail"} and body["detail"] == body["error"]["message"]
    assert body["error"]["code"] == "body_too_large" and body["error"]["type"] == "invalid_request_error"
    assert str(BOUND) in body["detail"] and "max_inference_body_bytes" in body["detail"]
    return body


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not errors, [record.getMessage() for record in errors]


# -- the setting -----------------------------------------------------------------------------


def test_the_inference_bound_is_its_own_setting(monkeypatch):
    monkeypatch.delenv("BERTH_MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("BERTH_MAX_INFERENCE_BODY_BYTES", raising=False)
    settings = Settings.load()
    assert settings.max_body_bytes == MiB and settings.max_inference_body_bytes == 100 * MiB
    monkeypatch.setenv("BERTH_MAX_INFERENCE_BODY_BYTES", str(3 * MiB))
    assert Settings.load().max_inference_body_bytes == 3 * MiB


def test_nothing_but_the_router_lives_under_its_prefix(world):
    """The worker's body limit leaves these paths to the router: an endpoint added there would
    read unbounded bodies."""
    under = [route for route in world["app"].routes if getattr(route, "path", "").startswith(ROUTER_PREFIX)]
    assert under and all(route.endpoint is inference for route in under)


# -- bodies that pass ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["header", "model"])
def test_a_five_mib_chat_body_reaches_the_engine_intact(world, route):
    body = _chat_body(5 * MiB)
    headers = _routed() if route == "header" else {"content-type": "application/json"}
    answer = world["http"].post("/v1/chat/completions", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["size"] == len(body) and seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["path"] == "/v1/chat/completions"


def test_a_header_routed_body_keeps_its_declared_length_or_stays_chunked(world):
    body = _chat_body(2 * MiB)
    declared = world["http"].post("/v1/chat/completions", content=body, headers=_routed()).json()
    assert declared["content_length"] == str(len(body)) and not declared["chunked"]
    chunked = world["http"].post("/v1/chat/completions", content=_chunks(body), headers=_routed()).json()
    assert chunked["chunked"] and chunked["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_header_routed_body_streams_to_the_engine_as_it_arrives(world):
    """The engine holds the first bytes while the client still holds the last: nothing buffered."""
    engine = world["engine"]
    engine.first_bytes.clear()
    first, rest = b'{"model": "tiny", "prompt": "', b"y" * (3 * MiB) + b'"}'
    seen_before_last: list[bool] = []

    def chunks() -> Iterator[bytes]:
        yield first
        seen_before_last.append(engine.first_bytes.wait(WAIT_S))
        yield rest

    answer = world["http"].post("/v1/completions", content=chunks(), headers=_routed())
    assert answer.status_code == 200 and answer.json()["size"] == len(first) + len(rest)
    assert seen_before_last == [True], "the engine saw nothing before the client sent its last byte"


# -- bodies over the bound -------------------------------------------------------------------


@pytest.mark.parametrize("route", ["header", "model"])
def test_a_declared_length_over_the_bound_is_413_before_any_byte(world, route):
    """Only the headers are sent: the 413 comes without the body ever being read."""
    before = world["engine"].requests
    connection = http.client.HTTPConnection("127.0.0.1", world["port"], timeout=WAIT_S)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        headers = _routed() if route == "header" else {"content-type": "application/json"}
        for name, value in {**headers, "content-length": str(BOUND + 1)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        _too_large(connection.getresponse())
    finally:
        connection.close()
    assert world["engine"].requests == before


def test_an_undeclared_body_over_the_bound_routed_by_model_is_413(world, caplog):
    before = world["engine"].requests
    answer = world["http"].post("/v1/chat/completions", content=_chunks(_chat_body(BOUND)),
                                headers={"content-type": "application/json"})
    _too_large(answer, answer.content)
    assert world["engine"].requests == before
    _no_errors_logged(caplog)


def test_an_undeclared_body_over_the_bound_routed_by_header_is_413_and_the_engine_request_ends(world, caplog):
    """The engine's request has started (it holds the first bytes) when the bound is passed: it is
    closed, the client gets the 413, nothing is logged as an error, and the route still serves."""
    engine = world["engine"]
    engine.first_bytes.clear()
    engine.hung_up.clear()
    answer = world["http"].post("/v1/chat/completions", content=_chunks(_chat_body(BOUND)), headers=_routed())
    _too_large(answer, answer.content)
    assert engine.first_bytes.is_set(), "the engine's request had not started: this test proves nothing"
    assert engine.hung_up.wait(WAIT_S), "the engine's request was left open"
    _no_errors_logged(caplog)
    again = world["http"].post("/v1/chat/completions", content=_chat_body(1024), headers=_routed())
    assert again.status_code == 200 and again.json()["size"] == len(_chat_body(1024))


def test_a_client_that_hangs_up_mid_body_ends_the_engine_request_quietly(world, caplog):
    engine = world["engine"]
    engine.first_bytes.clear()
    engine.hung_up.clear()
    connection = http.client.HTTPConnection("127.0.0.1", world["port"], timeout=WAIT_S)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        for name, value in {**_routed(), "content-length": str(4 * MiB)}.items():
            connection.putheader(name, value)
        connection.endheaders(b'{"model": "tiny", "prompt": "' + b"z" * MiB)
        assert engine.first_bytes.wait(WAIT_S), "the first bytes never reached the engine"
    finally:
        connection.close()
    assert engine.hung_up.wait(WAIT_S), "the engine's request outlived its client"
    _no_errors_logged(caplog)


# -- the control API keeps its own bound -----------------------------------------------------


def test_control_api_bodies_over_one_mib_are_still_413(world):
    body = json.dumps({"options": "--model /m " + "x" * (2 * MiB)}).encode()
    answer = world["http"].post("/v2/vllm/instances", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["detail"]
    streamed = world["http"].post("/v2/vllm/instances", content=_chunks(body, 256 << 10),
                                  headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "max_body_bytes" in streamed.json()["detail"]

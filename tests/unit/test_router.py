"""The inference router (`/v1/*`): by model name, LoRA adapter, routing header and activator,
streamed both ways, errors in OpenAI's shape. A real worker (uvicorn, memory deployer) in front of
a real HTTP stand-in engine on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.loras import lora_names
from berth.worker.routing._activation import ModelUnavailable, UnknownModel
from berth.worker.routing._router import pick_instance
from berth.worker.store._registry import InstanceRecord
from berth.worker.store._states import InstanceState
from tests.support.ports import free_port, free_range

SSE_GAP_S = 0.4


async def _chat(request: Request) -> JSONResponse | StreamingResponse:
    body = await request.body()
    data = json.loads(body or b"{}")
    if data.get("stream"):
        async def events():
            for index in range(3):
                yield f"data: {json.dumps({'index': index})}\n\n".encode()
                await asyncio.sleep(SSE_GAP_S)
            yield b"data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")
    headers = {k: v for k, v in request.headers.items()}
    return JSONResponse({"model": data.get("model"), "length": len(body), "headers": headers,
                         "query": str(request.url.query)})


async def _models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "tiny"}]})


def _serve(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server, thread


class FakeActivator:
    """Brings ``lazy`` up by creating an instance; knows ``ghost`` but cannot start it in time."""

    def __init__(self, start) -> None:
        self.start, self.touched, self.asked = start, [], []

    async def ensure_ready(self, model: str, timeout: float) -> str:
        self.asked.append((model, timeout))
        if model == "lazy":
            return await asyncio.to_thread(self.start)
        if model == "ghost":
            raise ModelUnavailable("model 'ghost' is starting; not ready within 1 s", retry_after=7.2)
        raise UnknownModel(f"no model named {model!r} is defined on this worker")

    def touch(self, instance_id: str) -> None:
        self.touched.append(instance_id)


def _engine() -> Starlette:
    return Starlette(routes=[Route("/v1/chat/completions", _chat, methods=["POST"]),
                             Route("/v1/models", _models, methods=["GET"])])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    probe = FakeProbe()
    settings = Settings.load(data_dir=tmp_path_factory.mktemp("router") / "data", poll_interval=0.05,
                             instance_port_range=free_range(51), router_activation_timeout=3)
    manager = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe)
    app = create_app(manager)
    port = free_port()
    servers = [_serve(app, port)]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30)

    def launch(instance_id: str, options: str) -> str:
        """Create the instance, then start a stand-in engine on the port berth gave it."""
        assert http.put(f"/v2/vllm/instances/{instance_id}", json={"options": options}).status_code == 201
        engine_port = manager.get(instance_id).ports["http"]
        servers.append(_serve(_engine(), engine_port))
        probe.ready.add(f"http://127.0.0.1:{engine_port}")
        _wait_running(manager, instance_id)
        return instance_id

    launch("base", "--model /models/tiny --served-model-name tiny --lora-modules sql-lora=/adapters/sql")
    activator = FakeActivator(lambda: launch("lazy-1", "--model /models/lazy --served-model-name lazy"))
    yield {"http": http, "app": app, "manager": manager, "activator": activator}
    http.close()
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=20)


def _wait_running(manager: ServeManager, instance_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if manager.get(instance_id).state is InstanceState.RUNNING:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance_id} never ran: {manager.get(instance_id)}")


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error", "detail"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["detail"] == body["error"]["message"]
    return body["error"]


def test_routes_by_served_name_and_keeps_query_but_not_credentials(world):
    answer = world["http"].post("/v1/chat/completions?trace=1", headers={"Authorization": "Bearer client-secret"},
                                json={"model": "tiny", "messages": []})
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "tiny" and body["query"] == "trace=1"
    assert "authorization" not in body["headers"]


def test_lora_adapter_routes_to_its_base_instance(world):
    answer = world["http"].post("/v1/chat/completions", json={"model": "sql-lora", "messages": []})
    assert answer.status_code == 200 and answer.json()["model"] == "sql-lora"


def test_streams_events_as_the_engine_sends_them(world):
    started = time.monotonic()
    arrivals = []
    with world["http"].stream("POST", "/v1/chat/completions", json={"model": "tiny", "stream": True}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    # The first event arrives long before the engine finished (3 gaps): nothing was buffered.
    assert arrivals[0] < SSE_GAP_S * 2 < arrivals[-1]


def test_unknown_missing_and_unreadable_models_are_openai_errors(world):
    http = world["http"]
    missing = http.post("/v1/chat/completions", json={"model": "nope"})
    assert missing.status_code == 404 and _error(missing)["code"] == "model_not_found"
    unnamed = http.post("/v1/chat/completions", json={"messages": []})
    assert unnamed.status_code == 400 and _error(unnamed)["param"] == "model"
    garbled = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert garbled.status_code == 400 and _error(garbled)["code"] == "invalid_json"
    form = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")})
    assert form.status_code == 400 and "multipart/form-data" in _error(form)["message"]


def test_models_lists_served_names_and_adapters(world):
    names = [item["id"] for item in world["http"].get("/v1/models").json()["data"]]
    assert names[:2] == ["tiny", "sql-lora"]


def test_header_route_streams_the_body_through(world):
    world["app"].state.services.header_routes["X-Test-Instance"] = lambda value: value if value == "base" else None
    try:
        def chunks():
            yield b'{"model": "whatever", '
            yield b'"pad": "' + b"x" * 5000 + b'"}'

        answer = world["http"].post("/v1/chat/completions", headers={"X-Test-Instance": "base",
                                                                     "content-type": "application/json"},
                                    content=chunks())
        assert answer.status_code == 200
        assert answer.json()["length"] == len(b'{"model": "whatever", ') + 5000 + len(b'"pad": ""}')
        assert "x-test-instance" not in answer.json()["headers"]
        unknown = world["http"].post("/v1/chat/completions", headers={"X-Test-Instance": "other"}, json={})
        assert unknown.status_code == 404 and _error(unknown)["code"] == "instance_not_found"
    finally:
        world["app"].state.services.header_routes.pop("X-Test-Instance")


def test_activator_brings_models_up_and_hears_of_every_request(world):
    activator = world["activator"]
    world["app"].state.services.activator = activator
    try:
        http = world["http"]
        assert http.post("/v1/chat/completions", json={"model": "lazy"}).json()["model"] == "lazy"
        assert activator.asked[-1] == ("lazy", 3)
        assert activator.touched[-1] == "lazy-1"
        http.post("/v1/chat/completions", json={"model": "tiny"})
        assert activator.touched[-1] == "base"
        busy = http.post("/v1/chat/completions", json={"model": "ghost"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
        assert _error(busy)["code"] == "model_unavailable"
        unknown = http.post("/v1/chat/completions", json={"model": "nobody"})
        assert unknown.status_code == 404 and "nobody" in _error(unknown)["message"]
    finally:
        world["app"].state.services.activator = None
        world["manager"].delete("lazy-1")


def _record(instance_id, state, names, params=None, ready_at=1.0):
    return InstanceRecord(id=instance_id, source="spec", deployer="memory", workload=instance_id, state=state,
                          spec={"model": {"backend_parameters": params or []}}, ready_at=ready_at,
                          endpoints={"base_url": "http://127.0.0.1:1", "served_names": names})


def test_pick_instance_prefers_served_names_then_adapters_then_the_oldest_replica():
    records = [
        _record("a", InstanceState.RUNNING, ["m"], ready_at=5.0),
        _record("b", InstanceState.RUNNING, ["m"], ready_at=2.0),
        _record("c", InstanceState.STARTING, ["x"]),
        _record("d", InstanceState.RUNNING, ["base"], ["--lora-modules", "m2=/p", '{"name": "m3", "path": "/q"}']),
    ]
    assert pick_instance(records, "m").id == "b"
    assert pick_instance(records, "x") is None
    assert pick_instance(records, "m3").id == "d"
    assert lora_names({"model": {"backend_parameters": ["--lora-modules=solo=/s"],
                                 "lora_list": [{"lora_name": "from-gpustack"}]}}) == ["solo", "from-gpustack"]

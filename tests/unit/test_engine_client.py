"""The worker's one engine client over an in-process transport: the one readiness rule, runtime
LoRA calls, sleep and load, Ray's node summary, and one pool per worker shared with swap."""

from __future__ import annotations

import json

import httpx
import pytest

from berth.deployers.memory import MemoryDeployer
from berth.utils.readiness import probe_ready
from berth.worker import ServeManager, Settings
from berth.worker.engine import EngineClient, EngineError, ReadinessProbe
from berth.worker.loras import EngineRefused
from berth.worker.swap import EngineControl
from tests.support.ports import free_range


class Engine:
    """Answers like vLLM: /health, /v1/models (with ``names``), /metrics, sleep mode, a Ray summary."""

    def __init__(self, names=("primary", "alias"), health=200) -> None:
        self.names, self.health, self.seen = list(names), health, []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, dict(request.url.params)))
        routes = {
            "/health": lambda: httpx.Response(self.health),
            "/v1/models": lambda: httpx.Response(200, json={"data": [{"id": n} for n in self.names]
                                                            + [{"id": "ad", "parent": self.names[0]}]}),
            "/metrics": lambda: httpx.Response(200, text="vllm:num_requests_running{m=\"x\"} 2.0\n"
                                                         "vllm:num_requests_waiting{m=\"x\"} 1.0\n"),
            "/is_sleeping": lambda: httpx.Response(200, json={"is_sleeping": True}),
            "/nodes": lambda: httpx.Response(200, json={"data": {"summary": [
                {"raylet": {"nodeManagerAddress": "10.0.0.2", "state": "ALIVE"}},
                {"raylet": {"nodeManagerAddress": "10.0.0.3", "state": "DEAD"}}]}}),
        }
        if request.url.path in routes:
            return routes[request.url.path]()
        if request.url.path in ("/sleep", "/wake_up", "/collective_rpc"):
            return httpx.Response(200)
        return httpx.Response(404, json={"detail": "Not Found"})

    def client(self) -> EngineClient:
        return EngineClient(transport=httpx.MockTransport(self.handle))


def test_ready_means_health_and_the_primary_served_name_listed():
    engine = Engine()
    client = engine.client()
    assert client.check("http://e", ["primary", "alias"]).ready
    assert client.check("http://e", []).ready  # no name: /health decides, as probe_ready says
    engine.names = ["alias"]
    late = client.check("http://e", ["primary", "alias"])
    assert not late.ready and "'primary' not listed yet" in late.detail
    engine.health = 503
    assert client.check("http://e", ["alias"]).detail == "/health answered 503"


def test_the_rule_is_probe_ready_whatever_the_transport():
    answers = {"http://e/health": (200, b""), "http://e/v1/models": (200, json.dumps({"data": [{"id": "m"}]}).encode())}
    assert probe_ready("http://e", "m", get=lambda url, timeout, token: answers[url]) == (True, "")
    assert probe_ready("http://e", "other", get=lambda url, timeout, token: answers[url])[0] is False
    assert probe_ready("http://e", "m", get=lambda url, timeout, token: (0, b"")) == (False, "not answering /health")


def test_lora_sleep_load_and_ray_questions():
    engine = Engine()
    client = engine.client()
    assert client.loaded_loras("http://e") == {"ad"}
    assert client.in_flight("http://e") == 3
    assert client.is_sleeping("http://e") is True
    client.wake("http://e", 2)
    assert [path for _, path, _ in engine.seen[-3:]] == ["/wake_up", "/collective_rpc", "/wake_up"]
    client.sleep("http://e", 1)
    assert engine.seen[-1] == ("POST", "/sleep", {"level": "1"})
    assert client.ray_nodes("http://dash") == {"10.0.0.2"}
    with pytest.raises(EngineRefused, match="--enable-lora") as refused:
        client.load_lora("http://e", "x", "/a/x")  # the route itself is missing
    assert refused.value.status_code == 409


def test_unanswered_questions_are_errors_or_none():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = EngineClient(transport=httpx.MockTransport(down))
    assert not client.check("http://e", ["m"]).ready
    assert client.in_flight("http://e") is None and client.ray_nodes("http://d") is None
    with pytest.raises(EngineError, match="sleep"):
        client.sleep("http://e", 1)
    with pytest.raises(EngineRefused, match="did not answer") as refused:
        client.loaded_loras("http://e")
    assert refused.value.status_code == 502


def test_closed_clients_reopen_and_ignore_proxies(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:1")
    engine = Engine()
    client = engine.client()
    client.close()
    assert client.check("http://e", ["primary"]).ready  # reopened, and no proxy in the way
    assert client._http()._trust_env is False
    assert isinstance(ReadinessProbe(timeout=1), EngineClient)


def test_the_worker_holds_one_client_that_swap_shares(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", instance_port_range=free_range(10), probe_timeout=1.5)
    manager = ServeManager(settings, deployer=MemoryDeployer()).start(watch=False)
    try:
        engine = manager.engine
        assert manager._context.probe is engine and engine.timeout == 1.5
        control = EngineControl(engine)
        control.close()  # a borrowed client is not closed by swap
        assert engine._client is None or not engine._client.is_closed
    finally:
        manager.close()

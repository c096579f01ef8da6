"""Model swapping end to end through the worker's OpenAI-compatible endpoint (``/v1/*``).

NEEDS THE /v1 ROUTER (berth/worker/router.py, built on another branch): every test here skips
while the worker's app serves no ``/v1`` route, and runs as soon as the router is merged. The
router must honour :class:`berth.worker.activation.RouteGate` (skip instances whose
``routable`` is False when it picks by name), or the sleeping-engine test fails.

Engines are the vLLM stand-in run by the process deployer: requests for parked models start
them, a budget of one alternates two models (put to sleep, then woken), concurrent requests
share one start, streams pass through, and a start past the router's deadline is a 503 with
``Retry-After``.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import berth.testing.vllm_standin as standin
from berth.deployers.process import ProcessDeployer
from berth.worker import ServeManager, Settings, create_app
from tests.support.ports import free_range

pytestmark = pytest.mark.subprocess  # real stand-in engines, started as processes

STANDIN = str(Path(standin.__file__).resolve())


def make_app(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    settings = Settings.load(
        data_dir=tmp_path / "data", poll_interval=0.1, instance_port_range=free_range(100), stop_timeout=5,
        stop_instances_on_exit=True, entrypoint=[sys.executable, STANDIN], **extra,
    )
    app = create_app(ServeManager(settings, deployer=ProcessDeployer(tmp_path / "run")))
    if not any(getattr(route, "path", "").startswith("/v1") for route in app.routes):
        pytest.skip("the worker serves no /v1 route yet (the inference router is merged separately)")
    return app


def register(client: TestClient, name: str, options: str = "", **extra: object) -> None:
    body = {"name": name, "launcher": {"options": f"--model /models/{name} {options}"}, **extra}
    assert client.post("/v2/models", json=body).status_code == 201


def ask(client: TestClient, model: str, **extra: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                                                     **extra})


def answer(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def model_events(client: TestClient, kind: str) -> list[dict]:
    lines = client.get("/v2/instances/watch", params={"since": 0, "timeout": 0.3}).text.splitlines()
    return [event for event in map(json.loads, lines) if event["type"] == kind]


def test_alternating_models_under_a_budget_of_one(tmp_path):
    with TestClient(make_app(tmp_path, swap_max_engines=1)) as client:
        register(client, "a", sleep_level=1)
        register(client, "b", sleep_level=1)
        for name in ["a", "b", "a", "b", "a", "b"]:
            assert answer(ask(client, name)) == f"{name} says ok"  # never the other model
        paths = [event["instance"]["path"] for event in model_events(client, "model.ready")]
        assert paths == ["cold", "cold", "woken", "woken", "woken", "woken"]
        for name in "ab":
            base_url = client.get(f"/v2/models/{name}").json()["base_url"]
            metrics = httpx.get(f"{base_url}/metrics", trust_env=False).text
            assert "standin_asleep_requests_total 0.0" in metrics  # no request reached a sleeping engine


def test_concurrent_requests_for_a_parked_model_share_one_start(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "m", "--startup-delay 1")
        with ThreadPoolExecutor(max_workers=10) as pool:
            replies = list(pool.map(lambda _: ask(client, "m"), range(10)))
        assert [answer(reply) for reply in replies] == ["m says ok"] * 10
        assert len(model_events(client, "model.starting")) == 1


def test_streams_pass_through(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        register(client, "s")
        with client.stream("POST", "/v1/chat/completions",
                           json={"model": "s", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as reply:
            assert reply.status_code == 200
            chunks = [line for line in reply.iter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "data: [DONE]" and len(chunks) == 4


def test_a_start_past_the_deadline_is_503_with_retry_after(tmp_path):
    if "router_activation_timeout" not in Settings.model_fields:
        pytest.skip("the router's deadline setting (router_activation_timeout) is not there yet")
    with TestClient(make_app(tmp_path, router_activation_timeout=0.5)) as client:
        register(client, "late", "--startup-delay 3")
        reply = ask(client, "late")
        assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
        assert "late" in reply.text
        assert client.post("/v2/models/late/wake", params={"timeout": 30}).json()["state"] == "running"
        assert answer(ask(client, "late")) == "late says ok"


def test_an_unregistered_model_is_404(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        assert ask(client, "nobody").status_code == 404

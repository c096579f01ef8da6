"""Model swapping with real processes: the process deployer runs the vLLM stand-in
(``berth/testing/vllm_standin.py``), which implements vLLM's sleep endpoints (vLLM itself
refuses sleep mode on CPU). Sleep and wake through the API, the budget putting engines to sleep
instead of parking them, no request reaching a sleeping engine or lost to an eviction."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
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


def make_client(tmp_path: Path, **extra: object) -> TestClient:
    base = {"data_dir": tmp_path / "data", "poll_interval": 0.1, "instance_port_range": free_range(100),
            "stop_timeout": 5, "stop_instances_on_exit": True, "entrypoint": [sys.executable, STANDIN]}
    settings = Settings.load(**{**base, **extra})
    manager = ServeManager(settings, deployer=ProcessDeployer(tmp_path / "run"))
    return TestClient(create_app(manager))


@pytest.fixture
def http():
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def register(client: TestClient, name: str, options: str = "", **extra: object) -> None:
    body = {"name": name, "launcher": {"options": f"--model /models/{name} {options}"}, **extra}
    reply = client.post("/v2/models", json=body)
    assert reply.status_code == 201, reply.text


def wake(client: TestClient, name: str) -> dict:
    reply = client.post(f"/v2/models/{name}/wake", params={"timeout": 60})
    assert reply.status_code == 200, reply.text
    return reply.json()


def chat(http: httpx.Client, base_url: str, model: str) -> str:
    reply = http.post(f"{base_url}/v1/chat/completions",
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def refused_while_asleep(http: httpx.Client, base_url: str) -> float:
    text = http.get(f"{base_url}/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("standin_asleep_requests")))


def test_sleep_and_wake_as_api_operations(tmp_path, http):
    with make_client(tmp_path) as client:
        register(client, "s", sleep_level=1)
        first = wake(client, "s")
        assert first["path"] == "cold" and chat(http, first["base_url"], "s") == "s says ok"
        asleep = client.post("/v2/models/s/sleep")
        assert asleep.status_code == 200 and asleep.json()["state"] == "asleep"
        assert http.get(f"{first['base_url']}/is_sleeping").json() == {"is_sleeping": True}
        assert client.get("/v2/instances/s").json()["state"] == "running"  # the process lives on
        assert client.app.state.services.swap.routable("s") is False  # the router asks the activator instead
        again = wake(client, "s")
        assert again["path"] == "woken" and again["base_url"] == first["base_url"]
        assert client.app.state.services.swap.routable("s") is True
        assert chat(http, again["base_url"], "s") == "s says ok"
        assert client.post("/v2/models/s/sleep", params={"level": 3}).status_code == 422
        client.post("/v2/models/s/park")
        assert client.get("/v2/models/s").json()["state"] == "parked"


def test_a_budget_of_one_sleeps_the_other_engine_and_no_request_reaches_a_sleeper(tmp_path, http):
    with make_client(tmp_path, swap_max_engines=1) as client:
        register(client, "a", sleep_level=1)
        register(client, "b", sleep_level=1)
        paths, urls = [], {}
        for name in ["a", "b", "a", "b", "a"]:
            view = wake(client, name)
            paths.append(view["path"])
            urls[name] = view["base_url"]
            client.app.state.services.swap.touch(view["instance_id"])  # as the router does
            assert chat(http, view["base_url"], name) == f"{name} says ok"
            time.sleep(0.6)  # past the in-transit grace: the request is done
            other = "b" if name == "a" else "a"
            if other in urls:
                assert client.get(f"/v2/models/{other}").json()["state"] == "asleep"
        assert paths == ["cold", "cold", "woken", "woken", "woken"]
        assert [refused_while_asleep(http, urls[n]) for n in "ab"] == [0.0, 0.0]
        metrics = client.get("/metrics").text
        assert 'berth_model_evictions_total{action="sleep",reason="budget"} 4.0' in metrics
        assert 'berth_model_activations_total{path="woken"} 3.0' in metrics


def test_an_eviction_waits_for_the_request_in_flight(tmp_path, http):
    with make_client(tmp_path, swap_max_engines=1, swap_drain_timeout=20) as client:
        register(client, "slow", "--generate-seconds 1.5")
        register(client, "next")
        view = wake(client, "slow")
        time.sleep(0.6)
        answers: list[str] = []
        request = threading.Thread(target=lambda: answers.append(chat(http, view["base_url"], "slow")))
        client.app.state.services.swap.touch("slow")
        request.start()
        time.sleep(0.2)
        started = time.monotonic()
        assert wake(client, "next")["path"] == "cold"
        request.join(timeout=30)
        assert answers == ["slow says ok"]  # not cut off by the eviction
        assert time.monotonic() - started >= 1.0  # the start waited for it
        assert client.get("/v2/models/slow").json()["state"] == "parked"


def test_a_level_2_sleep_reloads_the_weights_on_wake(tmp_path, http):
    with make_client(tmp_path) as client:
        register(client, "deep", sleep_level=2)
        view = wake(client, "deep")
        assert client.post("/v2/models/deep/sleep").json()["state"] == "asleep"
        again = wake(client, "deep")
        assert again["path"] == "woken"
        assert chat(http, view["base_url"], "deep") == "deep says ok"  # 500 had the weights not been reloaded
        assert client.post("/v2/models/deep/sleep", params={"level": 1}).status_code == 200
        assert wake(client, "deep")["path"] == "woken" and chat(http, view["base_url"], "deep") == "deep says ok"


def test_the_stand_in_answers_like_vllm_after_a_level_2_sleep(tmp_path, http):
    from berth.testing import free_port, wait_http_ok

    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    argv = [sys.executable, STANDIN, "/models/x", "--port", str(port), "--served-model-name", "x",
            "--enable-sleep-mode"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/health", timeout=30)
        assert http.post(f"{base}/sleep", params={"level": 2}).status_code == 200
        assert http.post(f"{base}/wake_up").json() == {"status": "awake"}
        ask = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        assert http.post(f"{base}/v1/chat/completions", json=ask).status_code == 500  # weights gone
        assert http.post(f"{base}/collective_rpc", json={"method": "reload_weights"}).status_code == 200
        assert http.post(f"{base}/v1/chat/completions", json=ask).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_sleeping_model_is_still_asleep_after_a_worker_restart(tmp_path, http):
    keep = {"stop_instances_on_exit": False}
    with make_client(tmp_path, **keep) as client:  # the worker exits, the engine keeps running
        register(client, "nap", sleep_level=1)
        base_url = wake(client, "nap")["base_url"]
        assert client.post("/v2/models/nap/sleep").json()["state"] == "asleep"
    with make_client(tmp_path) as client:  # re-adopted; this one stops it on exit
        assert client.get("/v2/models/nap").json()["state"] == "asleep"
        assert client.app.state.services.swap.routable("nap") is False
        again = wake(client, "nap")
        assert (again["path"], again["base_url"]) == ("woken", base_url)
        assert chat(http, base_url, "nap") == "nap says ok"

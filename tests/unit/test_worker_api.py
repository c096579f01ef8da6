"""The worker's API over the in-memory deployer: the launcher contract exactly, the spec API,
errors, auth, limits, watch, metrics and secrets."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.utils.ports import parse_port_range
from berth.worker import ServeManager, Settings, create_app
from tests.support.ports import free_port, free_range

LOG = b"0123456789" * 3  # the seed's 30-byte example
SEED_INDEX = {
    "name": "Multi-Instance vLLM Management API",
    "version": "2.0",
    "endpoints": {
        "index": "GET /",
        "health": "GET /health",
        "create_instance": "POST /v2/vllm/instances",
        "create_named_instance": "PUT /v2/vllm/instances/{instance_id}",
        "delete_instance": "DELETE /v2/vllm/instances/{instance_id}",
        "delete_all_instances": "DELETE /v2/vllm/instances",
        "get_instance_status": "GET /v2/vllm/instances/{instance_id}",
        "get_all_instances": "GET /v2/vllm/instances",
        "get_instance_logs": "GET /v2/vllm/instances/{instance_id}/log",
    },
}


def make_settings(tmp_path, **extra):
    base = {"data_dir": tmp_path / "data", "poll_interval": 0.05, "instance_port_range": free_range(100)}
    return Settings.load(**{**base, **extra})


@pytest.fixture
def deployer():
    return MemoryDeployer(initial=WorkloadState.RUNNING)


@pytest.fixture
def client(tmp_path, deployer):
    """The API over a manager whose watcher runs only when a test calls ``watcher.run_once()``.

    With the background watcher also polling, ``run_once`` skips an instance the background
    thread is checking at that moment, and returns before that instance's new state is recorded.
    """
    manager = ServeManager(make_settings(tmp_path), deployer=deployer, probe=FakeProbe()).start(watch=False)
    with TestClient(create_app(manager, start=False)) as test_client:
        yield test_client


def put(client, instance_id, options="--model /models/tiny", **extra):
    return client.put(f"/v2/vllm/instances/{instance_id}", json={"options": options, **extra})


# -- the launcher contract ------------------------------------------------------------------


def test_index_and_health_are_the_seeds(client):
    assert client.get("/").json() == SEED_INDEX
    assert client.get("/health").json() == {"status": "OK"}


def test_create_with_generated_id(client):
    port = free_port()  # an explicit --port must be unbound on this host: not a fixed number
    response = client.post("/v2/vllm/instances", json={"options": f"--model /models/tiny --port {port}"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"status", "instance_id"} and body["status"] == "started"
    assert len(body["instance_id"]) == 36
    assert client.get(f"/v2/vllm/instances/{body['instance_id']}").json()["port"] == port


def test_create_named_then_conflict(client):
    assert put(client, "llama2").json() == {"status": "started", "instance_id": "llama2"}
    again = put(client, "llama2")
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def test_status_one_and_404(client):
    put(client, "a")
    status = client.get("/v2/vllm/instances/a").json()
    assert status["status"] == "running" and status["instance_id"] == "a"
    assert status["state"] == "starting" and status["ready"] is False
    missing = client.get("/v2/vllm/instances/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


@pytest.mark.parametrize("flag", ["true", "True", "1", None])
def test_list_detail(client, deployer, flag):
    put(client, "a")
    put(client, "b")
    deployer.set_state("b", WorkloadState.FAILED, exit_code=1, reason="exited with code 1")
    client.app.state.services.manager._watch.run_once()
    url = "/v2/vllm/instances" + (f"?detail={flag}" if flag else "")
    body = client.get(url).json()
    assert body["total_instances"] == 2 and body["running_instances"] == 1
    by_id = {item["instance_id"]: item for item in body["instances"]}
    assert by_id["a"]["status"] == "running"
    assert by_id["b"]["status"] == "stopped" and by_id["b"]["state"] == "failed" and by_id["b"]["exit_code"] == 1


@pytest.mark.parametrize("flag", ["false", "False", "0"])
def test_list_ids_only(client, flag):
    put(client, "a")
    put(client, "b")
    assert client.get(f"/v2/vllm/instances?detail={flag}").json() == {"instance_ids": ["a", "b"], "count": 2}


def test_list_bad_detail_is_422(client):
    response = client.get("/v2/vllm/instances?detail=maybe")
    assert response.status_code == 422 and response.json()["detail"].startswith("detail:")


def test_delete_one_and_all(client):
    for name in ("a", "b", "c"):
        put(client, name)
    assert client.delete("/v2/vllm/instances/a").json() == {"status": "terminated", "instance_id": "a"}
    assert client.delete("/v2/vllm/instances/a").status_code == 404
    body = client.delete("/v2/vllm/instances").json()
    assert body["status"] == "all_stopped" and body["total_stopped"] == 2
    assert sorted(item["instance_id"] for item in body["stopped_instances"]) == ["b", "c"]
    assert all(item["status"] == "terminated" for item in body["stopped_instances"])
    assert client.get("/v2/vllm/instances?detail=false").json() == {"instance_ids": [], "count": 0}
    assert client.delete("/v2/vllm/instances").json() == {"status": "all_stopped", "stopped_instances": [],
                                                           "total_stopped": 0}


@pytest.mark.parametrize(
    "header,status,content_range,body",
    [
        (None, 200, None, LOG),
        ("bytes=0-14", 206, "bytes 0-14/30", LOG[:15]),
        ("bytes=15-29", 206, "bytes 15-29/30", LOG[15:]),
        ("bytes=15-", 206, "bytes 15-29/30", LOG[15:]),
        ("bytes=10-1000", 206, "bytes 10-29/30", LOG[10:]),
        ("bytes=-5", 206, "bytes 25-29/30", LOG[25:]),
        ("bytes=-500", 206, "bytes 0-29/30", LOG),
        ("bytes=29-29", 206, "bytes 29-29/30", LOG[29:]),
        ("bytes=30-", 416, "bytes */30", b""),
        ("bytes=31-40", 416, "bytes */30", b""),
        ("bytes=" + "9" * 30 + "-", 416, "bytes */30", b""),
        ("bytes=-0", 416, "bytes */30", b""),
    ],
)
def test_log_ranges(client, deployer, header, status, content_range, body):
    put(client, "a")
    deployer.write_log("a", LOG)
    response = client.get("/v2/vllm/instances/a/log", headers={"Range": header} if header else {})
    assert response.status_code == status
    assert response.headers.get("content-range") == content_range
    assert response.content == body
    if status in (200, 206):
        assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=abc", "items=0-1", "bytes=0-1,3-4", "bytes=-", "bytes"])
def test_log_malformed_range_is_400(client, deployer, header):
    put(client, "a")
    deployer.write_log("a", LOG)
    response = client.get("/v2/vllm/instances/a/log", headers={"Range": header})
    assert response.status_code == 400 and "Range" in response.json()["detail"]


def test_log_caps_at_one_mib(client, deployer):
    put(client, "a")
    deployer.write_log("a", b"x" * (3 << 20))
    assert len(client.get("/v2/vllm/instances/a/log").content) == 1 << 20
    response = client.get("/v2/vllm/instances/a/log", headers={"Range": "bytes=1048576-"})
    assert response.headers["content-range"] == f"bytes 1048576-2097151/{3 << 20}"
    response = client.get("/v2/vllm/instances/a/log", headers={"Range": "bytes=-2097152"})
    assert response.headers["content-range"] == f"bytes 1048576-2097151/{3 << 20}"


def test_empty_log(client):
    put(client, "a")
    assert client.get("/v2/vllm/instances/a/log").content == b""
    response = client.get("/v2/vllm/instances/a/log", headers={"Range": "bytes=0-"})
    assert response.status_code == 416 and response.headers["content-range"] == "bytes */0"
    assert client.get("/v2/vllm/instances/zz/log").status_code == 404


def test_seed_streaming_loop_reads_everything(client, deployer):
    put(client, "a")
    deployer.write_log("a", LOG)
    start, collected = 0, b""
    while True:
        response = client.get("/v2/vllm/instances/a/log", headers={"Range": f"bytes={start}-"})
        if response.status_code == 416:
            break
        collected += response.content
        start += len(response.content)
    assert collected == LOG


# -- errors, ids, limits ------------------------------------------------------------------------


@pytest.mark.parametrize("body,field", [
    ({}, "options"),
    ({"options": "--model /m", "extra": 1}, "body: unknown field 'extra'"),
    ({"options": 5}, "options"),
    ({"options": "--model /m", "env_vars": ["A=1"]}, "env_vars"),
    ({"options": "--port 1"}, "options"),
    ({"options": "--model /m", "env_vars": {"LD_PRELOAD": "/evil.so"}}, "env_vars.LD_PRELOAD"),
    ({"options": "--model /m", "env_vars": {"A B": "x"}}, "env_vars"),
    ({"options": "--model /m", "gpu_uuids": ["GPU-0"]}, "gpu_uuids"),
])
def test_bad_bodies_are_422_naming_the_field(client, body, field):
    response = client.post("/v2/vllm/instances", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(field)


def test_malformed_json_is_422(client):
    response = client.post("/v2/vllm/instances", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"].startswith("body")


@pytest.mark.parametrize("bad", ["a..b", "-x", "x" * 64, "bad%20id", "a%00b"])
def test_unsafe_ids_are_refused(client, bad):
    response = put(client, bad)
    assert response.status_code == 422 and "instance_id" in response.json()["detail"]
    assert client.get(f"/v2/vllm/instances/{bad}").status_code == 422


def test_path_traversal_never_routes(client):
    assert client.get("/v2/vllm/instances/..%2F..%2Fetc/log").status_code in (404, 422)


def test_huge_bodies_are_413(client):
    response = client.post("/v2/vllm/instances", content=b"{" + b" " * (2 << 20) + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]

    def chunks():
        for _ in range(3):
            yield b" " * (1 << 20)

    streamed = client.post("/v2/vllm/instances", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_unknown_route_is_json_404(client):
    response = client.get("/v9/nothing")
    assert response.status_code == 404 and "detail" in response.json()


# -- auth ----------------------------------------------------------------------------------------


def test_bearer_token(tmp_path, deployer):
    manager = ServeManager(make_settings(tmp_path, api_token="t0ken-value"), deployer=deployer, probe=FakeProbe())
    with TestClient(create_app(manager)) as client:
        assert client.get("/health").status_code == 200
        for method, url in [("GET", "/"), ("GET", "/v2/vllm/instances"), ("PUT", "/v2/vllm/instances/a"),
                            ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/v2/instances/watch")]:
            assert client.request(method, url).status_code == 401
            wrong = client.request(method, url, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        good = {"Authorization": "Bearer t0ken-value"}
        assert client.put("/v2/vllm/instances/a", json={"options": "--model /m"}, headers=good).status_code == 201
        assert client.get("/v2/vllm/instances", headers=good).status_code == 200
        assert client.get("/v2/vllm/instances", headers={"Authorization": "Basic t0ken-value"}).status_code == 401


# -- concurrency over real HTTP -------------------------------------------------------------------


@pytest.fixture
def live(tmp_path, deployer):
    manager = ServeManager(make_settings(tmp_path), deployer=deployer, probe=FakeProbe())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


def test_twenty_concurrent_puts_give_one_201(live):
    barrier = threading.Barrier(20)

    def create(_):
        with httpx.Client(trust_env=False) as http:
            barrier.wait()
            return http.put(f"{live}/v2/vllm/instances/same", json={"options": "--model /m"}).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(create, range(20)))
    assert codes.count(201) == 1 and codes.count(409) == 19
    with httpx.Client(trust_env=False) as http:
        assert http.get(f"{live}/v2/vllm/instances?detail=false").json()["count"] == 1


def test_concurrent_creates_get_distinct_ports(live):
    def create(index):
        with httpx.Client(trust_env=False) as http:
            return http.put(f"{live}/v2/vllm/instances/i{index}", json={"options": "--model /m"}).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(create, range(10))) == {201}
    with httpx.Client(trust_env=False) as http:
        ports = [item["port"] for item in http.get(f"{live}/v2/vllm/instances").json()["instances"]]
    assert len(set(ports)) == 10


# -- spec API, watch, metrics, secrets ------------------------------------------------------------


def spec_body(name="spec-1", **model):
    return {
        "model": {"name": "tiny", "image_name": "local/vllm", "env": {"HF_TOKEN": "hf_planted_secret"}, **model},
        "instance": {"name": name, "model_name": "tiny"},
        "worker": {"ip": "127.0.0.1"},
        "model_path": "/models/tiny",
    }


def test_spec_create_get_list_delete(client, deployer):
    response = client.post("/v2/instances", json=spec_body(backend_parameters=["--api-key", "sk-planted-key"]))
    assert response.status_code == 201, response.text
    body = response.json()
    http_port = body["named_ports"]["http"]  # the first port of the range free on this machine now
    start, end = parse_port_range(client.app.state.services.manager.settings.instance_port_range)
    assert body["instance_id"] == "spec-1" and start <= http_port <= end
    assert body["readiness_url"] == f"http://127.0.0.1:{http_port}/health"
    assert body["plan"]["env"]["HF_TOKEN"] == "******"
    assert "sk-planted-key" not in response.text and "hf_planted_secret" not in response.text
    listed = client.get("/v2/instances").json()
    assert listed["revision"] >= 2 and [i["instance_id"] for i in listed["instances"]] == ["spec-1"]
    one = client.get("/v2/instances/spec-1")
    assert one.json()["spec"]["model"]["env"]["HF_TOKEN"] == "******"
    assert "hf_planted_secret" not in one.text
    deployer.write_log("spec-1", b"hello\n")
    assert client.get("/v2/instances/spec-1/log").content == b"hello\n"
    assert client.get("/v2/instances/spec-1/log", headers={"Range": "bytes=-3"}).content == b"lo\n"
    assert client.delete("/v2/instances/spec-1").json() == {"status": "terminated", "instance_id": "spec-1"}
    assert client.get("/v2/instances/spec-1").status_code == 404


def test_spec_errors_name_fields(client):
    typo = spec_body()
    typo["modle"] = {}
    response = client.post("/v2/instances", json=typo)
    assert response.status_code == 422 and response.json()["detail"].startswith("body: unknown field 'modle'")
    tolerated = spec_body(name="spec-2")
    tolerated["model"]["backend_paramters"] = []
    response = client.post("/v2/instances", json=tolerated)
    assert response.status_code == 201
    assert "model.backend_paramters is not a field berth uses; ignored" in response.json()["plan"]["warnings"]
    missing = spec_body()
    del missing["worker"]
    assert client.post("/v2/instances", json=missing).json()["detail"].startswith("worker")
    client.post("/v2/instances", json=spec_body())
    assert client.post("/v2/instances", json=spec_body()).status_code == 409


def test_watch_is_resumable(client):
    put(client, "a")
    lines = [json.loads(line) for line in client.get("/v2/instances/watch?since=0&timeout=0.3").iter_lines() if line]
    assert [e["type"] for e in lines[:2]] == ["created", "updated"]
    assert lines[0]["instance"]["state"] == "pending" and lines[1]["instance"]["state"] == "starting"
    last = lines[-1]["revision"]
    client.delete("/v2/vllm/instances/a")
    later = [json.loads(line) for line in client.get(f"/v2/instances/watch?since={last}&timeout=0.3").iter_lines()
             if line]
    assert [e["type"] for e in later][-1] == "deleted" and all(e["revision"] > last for e in later)


def test_watch_refuses_trimmed_revisions(client):
    manager = client.app.state.services.manager
    manager._context.registry.retention = 100
    put(client, "a")
    for index in range(250):
        manager._context.registry.update("a", reason=f"r{index}")
    assert client.get("/v2/instances/watch?since=0").status_code == 410


def test_metrics(client, deployer):
    put(client, "a")
    client.get("/v2/vllm/instances/a")
    client.get("/v2/vllm/instances/missing")
    text = client.get("/metrics").text
    assert 'berth_instances{state="starting"} 1.0' in text
    assert 'route="/v2/vllm/instances/{instance_id}"' in text and 'status="404"' in text
    assert "missing" not in text
    assert "berth_instance_start_to_ready_seconds_bucket" in text


def test_docs_page(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v2/vllm/instances/{instance_id}/log" in paths and "/v2/instances/watch" in paths


def test_planted_secrets_appear_nowhere(client, deployer):
    secret_env, secret_opt = "hf_planted_value_1", "sk-planted-option-2"
    put(client, "s", options=f"--model /m --api-key {secret_opt}", env_vars={"HF_TOKEN": secret_env})
    deployer.write_log("s", f"starting with api_key={secret_opt} token={secret_env}\n".encode())
    deployer.set_state("s", WorkloadState.FAILED, exit_code=1, reason=f"bad token {secret_env}")
    client.app.state.services.manager._watch.run_once()
    answers = [
        client.get("/v2/vllm/instances").text,
        client.get("/v2/vllm/instances/s").text,
        client.get("/v2/instances").text,
        client.get("/v2/instances/s").text,
        client.get("/v2/instances/watch?since=0&timeout=0.2").text,
        client.get("/metrics").text,
        client.get("/v2/vllm/instances/s/log").text,
        client.get("/v2/vllm/instances/s/log", headers={"Range": "bytes=20-30"}).text,
    ]
    for answer in answers:
        assert secret_env not in answer and secret_opt not in answer

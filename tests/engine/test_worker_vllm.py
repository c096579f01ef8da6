"""`berth serve` with real vLLM (CPU) and the tiny local model, over real HTTP.

The worker runs as its own process on a free loopback port with the launcher deployer (the
process deployer when the launcher is unavailable). The tests run in order on one worker: the
launcher contract with real instances, 20 concurrent PUTs of one id, a ``kill -9`` of the worker
and its re-adoption of running instances (logs included), an instance killed from outside and
brought back by its restart policy, then everything deleted and the worker stopped with no
process left. At most two vLLM servers run at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_range
from tests.support.serve_process import ServeWorker

from berth.testing import CPU_ENV

pytestmark = pytest.mark.vllm

READY_TIMEOUT = 300.0


class ServeProcess(ServeWorker):
    """`berth serve` in a session of its own, restartable after ``kill -9``."""

    kill9_group = True

    def __init__(self, tmp_path: Path) -> None:
        env = {
            "BERTH_POLL_INTERVAL": "0.25",
            "BERTH_RESTART_POLICY": "on-failure",
            "BERTH_RESTART_BACKOFF": "0.5",
            "BERTH_STOP_TIMEOUT": "10",
            "BERTH_INSTANCE_PORT_RANGE": free_range(),
        }
        super().__init__(tmp_path, env, timeout=120, start_timeout=120, poll=0.2, stop_timeout=60)

    def status(self, instance_id: str) -> dict:
        return self.http.get(f"/v2/vllm/instances/{instance_id}").json()

    def wait_ready(self, instance_id: str, timeout: float = READY_TIMEOUT, **fields: object) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.status(instance_id)
            if body.get("status") == "stopped" and not fields:
                raise AssertionError(f"{instance_id} stopped: {body.get('reason')}")
            if body.get("ready") and all(body.get(k) == v for k, v in fields.items()):
                return body
            time.sleep(0.25)
        raise AssertionError(f"{instance_id} not ready in {timeout} s: {body}\n{self.log.read_text()[-4000:]}")


def processes_of(data_dir: Path) -> list[int]:
    """Live processes whose environment names this worker's data dir (daemon, instances, engine cores)."""
    mark = f"BERTH_DATA_DIR={data_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if mark in environ and state != "Z":
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    serve = ServeProcess(tmp_path_factory.mktemp("worker"))
    serve.start()
    yield serve
    serve.close()  # its client waits 120 s for the deletes
    deadline = time.monotonic() + 30
    while processes_of(serve.data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_of(serve.data_dir)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left behind: {left}"


def body(tiny_model: Path, extra: str = "--max-model-len 256") -> dict:
    return {"options": f"--model {tiny_model} --enforce-eager {extra}".strip(), "env_vars": dict(CPU_ENV)}


def ask(base_url: str, model: str) -> None:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=120) as http:
        chat = http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"


def test_launcher_contract_with_real_instances(worker, tiny_model):
    http = worker.http
    assert http.get("/").json()["name"] == "Multi-Instance vLLM Management API"
    assert http.get("/health").json() == {"status": "OK"}
    created = http.put("/v2/vllm/instances/tiny-a", json=body(tiny_model, "--max-model-len 256 --served-model-name tiny"))
    assert created.status_code == 201, created.text
    assert created.json() == {"status": "started", "instance_id": "tiny-a"}
    assert http.put("/v2/vllm/instances/tiny-a", json=body(tiny_model)).status_code == 409
    bad = http.put("/v2/vllm/instances/bad", json=body(tiny_model, "--max-model-len notanumber"))
    assert bad.status_code == 422 and "max-model-len" in bad.json()["detail"]

    ready = worker.wait_ready("tiny-a")
    assert ready["status"] == "running" and ready["state"] == "running"
    ask(ready["base_url"], "tiny")
    assert http.get("/v2/vllm/instances?detail=false").json() == {"instance_ids": ["tiny-a"], "count": 1}
    listed = http.get("/v2/vllm/instances?detail=True").json()
    assert listed["total_instances"] == 1 and listed["running_instances"] == 1
    assert http.get("/v2/vllm/instances/missing").status_code == 404

    whole = http.get("/v2/vllm/instances/tiny-a/log")
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/octet-stream"
    assert len(whole.content) > 100
    total = int(http.get("/v2/vllm/instances/tiny-a/log", headers={"Range": "bytes=0-0"})
                .headers["content-range"].rsplit("/", 1)[1])
    first = http.get("/v2/vllm/instances/tiny-a/log", headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.headers["content-range"] == f"bytes 0-99/{total}"
    assert first.content == whole.content[:100]
    tail = http.get("/v2/vllm/instances/tiny-a/log", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and len(tail.content) == 50
    past = http.get("/v2/vllm/instances/tiny-a/log", headers={"Range": f"bytes={10**12}-"})
    assert past.status_code == 416 and past.content == b"" and past.headers["content-range"].startswith("bytes */")
    assert http.get("/v2/vllm/instances/tiny-a/log", headers={"Range": "bytes=9-1"}).status_code == 400


def test_twenty_concurrent_puts_one_instance(worker, tiny_model):
    barrier = threading.Barrier(20)

    def put(_: int) -> int:
        with httpx.Client(base_url=worker.http.base_url, trust_env=False, timeout=120) as http:
            barrier.wait()
            return http.put("/v2/vllm/instances/tiny-b", json=body(tiny_model)).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(put, range(20)))
    assert codes.count(201) == 1 and codes.count(409) == 19
    ready = worker.wait_ready("tiny-b")
    ask(ready["base_url"], str(tiny_model))


def test_kill_9_of_the_worker_readopts_instances(worker):
    before = {i["instance_id"]: i for i in worker.http.get("/v2/vllm/instances").json()["instances"]}
    log_before = worker.http.get("/v2/vllm/instances/tiny-a/log").content
    worker.kill9()
    worker.start()
    after = {i["instance_id"]: i for i in worker.http.get("/v2/vllm/instances").json()["instances"]}
    assert set(after) == set(before) == {"tiny-a", "tiny-b"}
    for instance_id, item in after.items():
        assert item["status"] == "running" and item["restarts"] == 0
        assert worker.wait_ready(instance_id, timeout=30)["base_url"] == before[instance_id]["base_url"]
    log_after = worker.http.get("/v2/vllm/instances/tiny-a/log").content
    assert log_after.startswith(log_before[:1000])
    ask(after["tiny-a"]["base_url"], "tiny")


def test_instance_killed_from_outside_is_brought_back(worker):
    identity = worker.http.get("/v2/instances/tiny-b").json()["identity"]
    pid = int(identity.get("pid") or identity.get("pgid.default"))
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    seen_failure = False
    while time.monotonic() < deadline and not seen_failure:
        current = worker.status("tiny-b")
        seen_failure = current["restarts"] >= 1 or current["state"] == "failed"
        time.sleep(0.1)
    assert seen_failure
    back = worker.wait_ready("tiny-b", restarts=1)
    ask(back["base_url"], str(Path(worker.http.get("/v2/instances/tiny-b").json()["spec"]["model_path"])))


def test_delete_all_leaves_only_the_worker(worker):
    stopped = worker.http.delete("/v2/vllm/instances", timeout=120).json()
    assert stopped["status"] == "all_stopped" and stopped["total_stopped"] == 2
    assert worker.http.get("/v2/vllm/instances?detail=false").json()["count"] == 0

"""`berth serve` as a real process over real HTTP, with the process deployer and a fast
stand-in for vLLM: the launcher contract end to end, kill -9 of the worker and re-adoption,
an instance killed from outside brought back by its restart policy, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port, free_range
from tests.support.serve_process import FAKE_VLLM, spawn_serve, stop_group, wait_healthy

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


class Worker:
    """One `berth serve` process in a session of its own; :meth:`kill9` and :meth:`start` again."""

    def __init__(self, tmp_path: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.log = tmp_path / "serve.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.env = {**inherited, "BERTH_DATA_DIR": str(self.data_dir), **extra_env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=30)

    def start(self) -> None:
        self.proc = spawn_serve(["--port", str(self.port), "--deployer", "process"], self.env, self.log)
        wait_healthy(self.proc, self.http, self.log, timeout=60)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)

    def wait_state(self, instance_id: str, state: str, timeout: float = 30.0, **fields: object) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.http.get(f"/v2/vllm/instances/{instance_id}").json()
            if body.get("state") == state and all(body.get(k) == v for k, v in fields.items()):
                return body
            time.sleep(0.1)
        raise AssertionError(f"{instance_id} never reached {state} {fields}: {body}\n{self.log.read_text()}")


def fake_processes(data_dir: Path) -> list[int]:
    """Processes still running the stand-in for this test's instances (by their cwd or cmdline)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if "fake_vllm.py" in cmdline and str(data_dir).encode() in environ:
            found.append(int(entry))
    return found


@pytest.fixture
def worker(tmp_path):
    env = {
        "BERTH_ENTRYPOINT": json.dumps([sys.executable, FAKE_VLLM]),
        "BERTH_POLL_INTERVAL": "0.1",
        "BERTH_RESTART_POLICY": "on-failure",
        "BERTH_RESTART_BACKOFF": "0.2",
        "BERTH_STOP_TIMEOUT": "5",
        "BERTH_INSTANCE_PORT_RANGE": free_range(),
    }
    w = Worker(tmp_path, env)
    w.start()
    yield w
    try:
        w.http.delete("/v2/vllm/instances")
    except httpx.HTTPError:
        pass
    w.stop()
    w.http.close()
    leftovers = fake_processes(w.data_dir)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "instances left running"


def test_contract_readoption_and_restart(worker):
    http = worker.http
    created = http.put("/v2/vllm/instances/alpha", json={"options": "--model /models/fake --served-model-name alpha"})
    assert created.status_code == 201 and created.json() == {"status": "started", "instance_id": "alpha"}
    second = http.post("/v2/vllm/instances", json={"options": "--model /models/fake", "env_vars": {"X": 1}})
    beta = second.json()["instance_id"]
    alpha = worker.wait_state("alpha", "running", ready=True)
    worker.wait_state(beta, "running")
    assert http.get(f"{alpha['base_url']}/v1/models").json()["data"][0]["id"] == "alpha"
    log = http.get("/v2/vllm/instances/alpha/log")
    assert log.status_code == 200 and b"fake-vllm: serving on 127.0.0.1" in log.content

    worker.kill9()  # the worker dies; its instances must not
    assert http.get(f"{alpha['base_url']}/health", timeout=5).status_code == 200
    worker.start()
    listed = http.get("/v2/vllm/instances").json()
    assert listed["total_instances"] == 2 and listed["running_instances"] == 2
    assert worker.wait_state("alpha", "running")["restarts"] == 0
    tail = http.get("/v2/vllm/instances/alpha/log", headers={"Range": "bytes=-200"})
    assert tail.status_code == 206 and b"fake-vllm" in tail.content

    identity = http.get("/v2/instances/alpha").json()["identity"]
    os.killpg(int(identity["pgid.default"]), signal.SIGKILL)  # killed from outside
    restarted = worker.wait_state("alpha", "running", restarts=1)
    assert restarted["ready"] is True
    assert http.get(f"{restarted['base_url']}/health").status_code == 200

    stopped = http.delete("/v2/vllm/instances").json()
    assert stopped["total_stopped"] == 2
    assert fake_processes(worker.data_dir) == []


def test_sigterm_closes_the_manager(tmp_path):
    env = {
        "BERTH_ENTRYPOINT": json.dumps([sys.executable, FAKE_VLLM]),
        "BERTH_POLL_INTERVAL": "0.1",
        "BERTH_STOP_INSTANCES_ON_EXIT": "true",
        "BERTH_INSTANCE_PORT_RANGE": free_range(),
    }
    worker = Worker(tmp_path, env)
    worker.start()
    try:
        assert worker.http.put("/v2/vllm/instances/t", json={"options": "--model /m"}).status_code == 201
        worker.wait_state("t", "running")
        assert fake_processes(worker.data_dir)
    finally:
        worker.stop()  # SIGTERM: uvicorn shuts down, the lifespan closes the manager
        worker.http.close()
    assert worker.proc.returncode in (0, -signal.SIGTERM)
    assert "instance t deleted" in worker.log.read_text()
    assert fake_processes(worker.data_dir) == []

"""`berth serve` as a real process over real HTTP, with the process deployer and a fast
stand-in for vLLM: the launcher contract end to end, kill -9 of the worker and re-adoption,
an instance killed from outside brought back by its restart policy, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_range
from tests.support.serve_process import FAKE_VLLM, ServeWorker

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


class Worker(ServeWorker):
    """One `berth serve` process in a session of its own; :meth:`kill9` and :meth:`start` again."""

    kill9_group = True

    def __init__(self, tmp_path: Path, extra_env: dict[str, str]) -> None:
        super().__init__(tmp_path, extra_env, args=["--deployer", "process"], stop_timeout=20)


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
    w.close()
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

"""Faults in the worker's surroundings, with the worker in-process behind real HTTP (uvicorn on a
thread, so a blocked event loop would show): the deployer unreachable for a while, and the
SQLite registry locked by another connection. The worker keeps serving, answers what it cannot
do with a 503 naming the cause, and recovers by itself; nothing leaks.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers.base import Deployer, DeployerUnavailable
from berth.deployers.process import ProcessDeployer
from berth.schemas import LogChunk, WorkloadStatus
from berth.worker import ServeManager, Settings, create_app
from berth.worker.engine import ReadinessProbe
from tests.hardening._answers import assert_clean_answer
from tests.hardening._serve import STAND_IN, free_block, free_port, kill_strays, listening_ports, stray_processes

#: A read answered from memory, while the engine is down or the registry locked, comes back within
#: this (s). A read that waited would take the outage or SQLite's 5 s busy timeout; the bound leaves
#: room for a machine busy with other work, where even /health can take a second.
LATENCY = 2.5

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


class FlakyDeployer(Deployer):
    """A real deployer whose engine can be made unreachable: every call raises
    :class:`DeployerUnavailable` until :meth:`down` has run out."""

    def __init__(self, inner: Deployer) -> None:
        self.inner = inner
        self.name = inner.name
        self._until = 0.0
        self.refused = 0

    def down(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def _check(self) -> None:
        if time.monotonic() < self._until:
            self.refused += 1
            raise DeployerUnavailable("cannot reach the engine (simulated outage)")

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        self._check()
        return self.inner.create(plan)

    def get(self, name: str) -> WorkloadStatus:
        self._check()
        return self.inner.get(name)

    def _list(self) -> list[WorkloadStatus]:
        self._check()
        return self.inner.list()

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        self._check()
        return self.inner.logs(name, container=container, start=start, end=end)

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        self._check()
        return self.inner.delete(name, timeout=timeout)

    def adopt(self, name: str, identity: dict[str, str]) -> WorkloadStatus:
        self._check()
        return self.inner.adopt(name, identity)

    def close(self) -> None:
        self.inner.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def served(manager: ServeManager) -> Iterator[httpx.Client]:
    """The app over ``manager`` on a real port; the manager is closed on the way out."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_state(client: httpx.Client, instance_id: str, state: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v2/vllm/instances/{instance_id}").json()
        if body.get("state") == state:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {state}: {body}")


def timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - start


def put(client: httpx.Client, instance_id: str) -> httpx.Response:
    return client.put(f"/v2/vllm/instances/{instance_id}",
                      json={"options": f"--model /models/m --served-model-name {instance_id}"})


def _settings(data_dir: Path, ports: tuple[int, int]) -> Settings:
    return Settings.load(data_dir=data_dir, deployer="process", entrypoint=STAND_IN, poll_interval=0.1,
                         instance_port_range=f"{ports[0]}-{ports[1]}", stop_timeout=5, probe_timeout=1)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_block()


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """The worker's data dir; whatever a failed test left running under it is killed afterwards."""
    yield tmp_path / "data"
    kill_strays(tmp_path / "data")


def test_deployer_unreachable_for_a_while(data, ports):
    flaky = FlakyDeployer(ProcessDeployer(run_dir=data / "process"))
    manager = ServeManager(_settings(data, ports), deployer=flaky, probe=ReadinessProbe(timeout=1))
    fds = open_fds()
    with served(manager) as client:
        assert put(client, "steady").status_code == 201
        wait_state(client, "steady", "running")
        flaky.down(120.0)  # until the test ends it: on a busy machine the checks below take a while
        _during_outage(client)
        flaky.down(0.0)
        assert wait_state(client, "steady", "running")["restarts"] == 0  # the outage killed nothing
        assert put(client, "later").status_code == 201
        wait_state(client, "later", "running")
        assert client.delete("/v2/vllm/instances").json()["total_stopped"] == 2
    assert flaky.refused > 0
    assert stray_processes(data) == set()
    assert listening_ports(*ports) == set()
    assert open_fds() <= fds + 1


def _during_outage(client: httpx.Client) -> None:
    for _ in range(5):  # the watcher ticks meanwhile: nothing may be marked failed or vanished
        health, took = timed(client.get, "/health")
        assert health.status_code == 200 and took < LATENCY
        listed = client.get("/v2/vllm/instances").json()
        assert listed["running_instances"] == 1
        time.sleep(0.2)
    for response in (put(client, "refused"), client.delete("/v2/vllm/instances/steady"),
                     client.get("/v2/vllm/instances/steady/log")):
        assert response.status_code == 503, response.text
        assert_clean_answer(503, response.headers["content-type"], response.content, unavailable_ok=True)
        assert "cannot reach the engine" in response.json()["detail"]
    assert client.get("/v2/vllm/instances/refused").status_code == 404  # a refused create leaves no record
    assert client.get("/v2/vllm/instances/steady").json()["state"] == "running"


def test_worker_started_while_the_deployer_is_down_adopts_later(data, ports):
    first = ServeManager(_settings(data, ports), probe=ReadinessProbe(timeout=1))
    with served(first) as client:
        assert put(client, "kept").status_code == 201
        wait_state(client, "kept", "running")
    flaky = FlakyDeployer(ProcessDeployer(run_dir=data / "process"))
    flaky.down(120.0)  # until the test ends it, however long the second worker takes to start
    second = ServeManager(_settings(data, ports), deployer=flaky, probe=ReadinessProbe(timeout=1))
    with served(second) as client:
        assert "re-adoption pending" in client.get("/v2/vllm/instances/kept").json()["reason"]
        flaky.down(0.0)
        assert wait_state(client, "kept", "running")["restarts"] == 0
        assert client.delete("/v2/vllm/instances/kept").status_code == 200
    assert stray_processes(data) == set()


def test_registry_locked_by_another_connection(data, ports):
    manager = ServeManager(_settings(data, ports), probe=ReadinessProbe(timeout=1))
    with served(manager) as client:
        assert put(client, "held").status_code == 201
        wait_state(client, "held", "running")
        other = sqlite3.connect(data / "registry.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock past the worker's 5 s busy timeout
        try:
            _while_locked(client)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert put(client, "after").status_code == 201
        wait_state(client, "after", "running")
        assert client.delete("/v2/vllm/instances").json()["total_stopped"] == 2
    assert stray_processes(data) == set()
    assert listening_ports(*ports) == set()


def _while_locked(client: httpx.Client) -> None:
    results: dict[str, httpx.Response] = {}
    writes = [threading.Thread(target=lambda: results.update(put=put(client, "blocked"))),
              threading.Thread(target=lambda: results.update(delete=client.delete("/v2/vllm/instances/held")))]
    for thread in writes:
        thread.start()
    time.sleep(0.5)
    for url in ("/health", "/v2/vllm/instances", "/v2/vllm/instances/held", "/v2/instances", "/metrics"):
        response, took = timed(client.get, url)  # reads come from memory: no wait on the lock
        assert response.status_code == 200 and took < LATENCY, (url, took)
    for thread in writes:
        thread.join(timeout=60)
    for response in results.values():
        assert response.status_code == 503, response.text
        assert "locked" in response.json()["detail"]
    assert client.get("/v2/vllm/instances/blocked").status_code == 404
    assert client.get("/v2/vllm/instances/held").json()["state"] == "running"  # the failed stop stopped nothing


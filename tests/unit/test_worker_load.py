"""The worker under many followers (in-process, memory deployer): log reads are bounded by their
own limiter and never hold up status, an idle watch stream queries nothing, and the settings
``berth serve`` applies to its own process."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from berth.schemas import LogChunk
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.api._deps import LOG_READ_THREADS
from berth.worker.app._runtime import (
    _glibc,
    freeze_startup_objects,
    limit_malloc_arenas,
    trim_malloc,
)
from tests.support.ports import free_range

FOLLOWERS = 3 * LOG_READ_THREADS


class SlowLogs(MemoryDeployer):
    """Log reads that wait until released, counting how many run at once."""

    def __init__(self) -> None:
        super().__init__(initial=WorkloadState.RUNNING)
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self._count = threading.Lock()

    def logs(self, name, *, container="default", start=0, end=None) -> LogChunk:  # type: ignore[no-untyped-def]
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(timeout=30)
            return super().logs(name, container=container, start=start, end=end)
        finally:
            with self._count:
                self.running -= 1


@pytest.fixture
def slow(tmp_path):
    deployer = SlowLogs()
    settings = Settings.load(data_dir=tmp_path / "data", poll_interval=0.05, instance_port_range=free_range(100))
    manager = ServeManager(settings, deployer=deployer, probe=FakeProbe())
    with TestClient(create_app(manager)) as client:
        yield client, deployer, manager


def test_log_reads_are_bounded_and_leave_status_answering(slow):
    client, deployer, _ = slow
    assert client.put("/v2/vllm/instances/a", json={"options": "--model /models/tiny"}).status_code == 201
    deployer.write_log("a", b"hello\n")
    with ThreadPoolExecutor(FOLLOWERS) as pool:
        reads = [pool.submit(client.get, "/v2/vllm/instances/a/log", headers={"Range": "bytes=0-"})
                 for _ in range(FOLLOWERS)]
        deadline = time.monotonic() + 10
        while deployer.running < LOG_READ_THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # would more reads start?
        assert deployer.running == LOG_READ_THREADS
        status = client.get("/v2/vllm/instances/a")  # every log read is stuck: status still answers
        listing = client.get("/v2/vllm/instances")
        deployer.release.set()
        answers = [read.result(timeout=30) for read in reads]
    assert status.status_code == 200 and listing.json()["total_instances"] == 1
    assert deployer.most == LOG_READ_THREADS
    assert all(a.status_code == 206 and a.content == b"hello\n" for a in answers)


def _settled_revision(client: TestClient) -> int:
    """The revision once the watcher has recorded the instance's start (it no longer moves)."""
    revision = -1
    while (now := client.get("/v2/instances").json()["revision"]) != revision:
        revision = now
        time.sleep(0.3)
    return revision


def test_an_idle_watch_stream_queries_nothing(slow, monkeypatch):
    client, _, manager = slow
    calls = []
    real = manager.events_since
    monkeypatch.setattr(manager, "events_since", lambda since, limit=500: calls.append(since) or real(since, limit))
    assert client.put("/v2/vllm/instances/a", json={"options": "--model /models/tiny"}).status_code == 201
    revision = _settled_revision(client)
    lines = client.get(f"/v2/instances/watch?since={revision}&timeout=1").text.splitlines()
    assert calls == [] and all('"heartbeat"' in line for line in lines)
    assert client.get("/v2/instances/watch?since=0&timeout=0.5").text.count('"created"') == 1
    assert calls[-1:] == [0]


def test_process_settings_take_effect():
    assert limit_malloc_arenas() in (True, False)  # False only off glibc or with MALLOC_ARENA_MAX set
    assert trim_malloc() is _glibc()
    freeze_startup_objects()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

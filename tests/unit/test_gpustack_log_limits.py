"""GPUStack's log pages read under the app's one log-read limiter, with berth's own log reads."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.api._deps import LOG_READ_THREADS
from berth.worker.gpustack._identity import Identity, save_identity
from tests.unit.test_worker_load import SlowLogs


@pytest.fixture
def slow_joined(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", gpustack_url="http://127.0.0.1:9", gpustack_token="reg",
                             api_token="berth-own", poll_interval=0.05)
    save_identity(settings.data_dir, Identity("http://127.0.0.1:9", 7, "uuid", "w", "gpustack_worker_token"))
    deployer = SlowLogs()
    manager = ServeManager(settings, deployer=deployer, probe=FakeProbe())
    with TestClient(create_app(manager)) as client:
        yield client, deployer


def test_gpustack_log_pages_share_the_log_read_limiter(slow_joined):
    client, deployer = slow_joined
    own = {"Authorization": "Bearer berth-own"}
    spec = {"model": {"name": "tiny"}, "instance": {"name": "gpustack-11", "model_name": "tiny"},
            "worker": {"ip": "127.0.0.1"}, "model_path": "/models/tiny"}
    assert client.post("/v2/instances", json=spec, headers=own).status_code == 201
    deployer.write_log("gpustack-11", b"one\ntwo\n")
    gpustack = {"Authorization": "Bearer gpustack_worker_token"}
    readers = 3 * LOG_READ_THREADS
    with ThreadPoolExecutor(readers + 1) as pool:
        pages = [pool.submit(client.get, "/serveLogs/11", params={"offset": 0, "limit": 10}, headers=gpustack)
                 for _ in range(readers)]
        deadline = time.monotonic() + 10
        while deployer.running < LOG_READ_THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        own_read = pool.submit(client.get, "/v2/instances/gpustack-11/log", headers=own)
        time.sleep(0.3)  # would more reads start?
        assert deployer.running == LOG_READ_THREADS
        deployer.release.set()
        answers = [page.result(timeout=30) for page in pages]
        assert own_read.result(timeout=30).content == b"one\ntwo\n"
    assert deployer.most == LOG_READ_THREADS
    assert all(a.status_code == 200 and a.content == b"one\ntwo\n" for a in answers)

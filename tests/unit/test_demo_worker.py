"""The demo's worker handle: a real `berth serve` (memory deployer), its API, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from berth.demo.worker import (
    LocalWorker,
    WorkerAPIError,
    _sweep,
    _worker_env,
    free_port_block,
)
from berth.utils.ports import free_port


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_block_is_a_random_block_below_the_ephemeral_range() -> None:
    blocks = {free_port_block() for _ in range(5)}
    assert len(blocks) > 1, "the same block every time: workers side by side would collide"
    for block in blocks:
        start, end = map(int, block.split("-"))
        assert end - start == 99 and 20000 <= start and end < 32768


def test_free_port_block_skips_a_block_with_a_bound_port(monkeypatch: pytest.MonkeyPatch) -> None:
    import berth.demo.worker as worker_module
    import berth.utils.ports as ports_module

    monkeypatch.setattr(worker_module, "_PORT_AREA", (20000, 20199))
    monkeypatch.setattr(ports_module, "is_port_free", lambda port: port != 20050)  # as if 20050 were bound
    assert free_port_block() == "20100-20199"
    monkeypatch.setattr(ports_module, "is_port_free", lambda port: port not in (20050, 20150))
    with pytest.raises(WorkerAPIError, match="no 100 free ports in a row"):
        free_port_block()


def test_worker_env_names_the_instance_ports_and_drops_other_berth_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_INSTANCE_PORT_RANGE", "1-2")
    monkeypatch.setenv("BERTH_AUTH_TOKEN", "x")
    env = _worker_env("20100-20199")
    assert env["BERTH_INSTANCE_PORT_RANGE"] == "20100-20199" and "BERTH_AUTH_TOKEN" not in env
    assert "BERTH_INSTANCE_PORT_RANGE" not in _worker_env()


@pytest.mark.subprocess
def test_sweep_kills_only_processes_naming_the_marker(tmp_path: Path) -> None:
    marker = str(tmp_path / "berth-demo-marker")
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, "X_DEMO_DIR": marker}, start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert _sweep(marker) == [marked.pid]
        assert marked.wait(timeout=5) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for proc in (marked, other):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.mark.subprocess
def test_worker_serves_its_api_and_stops_without_leftovers() -> None:
    worker = LocalWorker.create(deployer="memory")
    try:
        worker.start(timeout=60)
        assert worker.call("GET", "/v2/vllm/instances")["total_instances"] == 0
        assert worker.instance_log("absent") == b""
        with pytest.raises(WorkerAPIError, match="404"):
            worker.call("GET", "/v2/vllm/instances/absent")
    finally:
        stragglers = worker.stop()
    assert stragglers == []
    assert worker.pid is not None and _gone(worker.pid)
    assert not worker.data_dir.exists()


def test_busy_port_is_refused_with_the_fix() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        worker = LocalWorker.create(port=sock.getsockname()[1], deployer="memory")
        try:
            with pytest.raises(WorkerAPIError, match="--port"):
                worker.start()
        finally:
            worker.stop()


def test_state_round_trip_and_ownership(tmp_path: Path) -> None:
    worker = LocalWorker(data_dir=tmp_path, port=1234, deployer="process", pid=os.getpid())
    again = LocalWorker.from_state(worker.to_state())
    assert (again.data_dir, again.port, again.deployer, again.pid) == (tmp_path, 1234, "process", os.getpid())
    assert not again.is_ours()  # this test process does not name that data dir

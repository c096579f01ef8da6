"""Following a log through the worker's API outlives the worker: ``berth --worker URL logs -f``
goes on from its byte offset across a ``kill -9`` and restart of the worker, prints every byte of
the log exactly once, and ends when the instance is deleted. And the worker keeps an idle
connection open longer than clients pool one, so a follower never reuses a connection the worker
is closing at that moment."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from berth.worker.app._app import KEEP_ALIVE_S
from tests.hardening._serve import ServeProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.subprocess  # berth serve as a process, killed and restarted

#: How long httpx keeps an idle pooled connection (its default ``keepalive_expiry``).
CLIENT_POOL_S = 5.0


def _chatter(base_url: str, times: int = 3) -> None:
    """Requests the stand-in logs one line each for, so the log grows."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        for _ in range(times):
            client.get(f"{base_url}/v1/models")


def _follow(worker: ServeProcess, instance_id: str, out: Path, err: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")} | {"BERTH_WORKER": worker.url}
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "berth", "logs", "-f", instance_id],
                                env=env, stdout=stdout, stderr=stderr)


def test_logs_follow_resumes_across_a_worker_restart(tmp_path: Path) -> None:
    worker = ServeProcess(tmp_path)
    worker.start()
    out, err = tmp_path / "follow.out", tmp_path / "follow.err"
    follower: subprocess.Popen[bytes] | None = None
    try:
        options = "--model /models/m --served-model-name f-1"
        assert worker.http.put("/v2/vllm/instances/f-1", json={"options": options}).status_code == 201
        base_url = worker.wait_state("f-1", "running", ready=True)["base_url"]
        follower = _follow(worker, "f-1", out, err)
        _chatter(base_url)
        wait_for(lambda: out.read_bytes().count(b"GET /v1/models") >= 3, "the first lines")

        worker.kill9()
        _chatter(base_url)  # written while no worker answers
        wait_for(lambda: b"will resume at byte" in err.read_bytes(), "the follower to notice")
        assert follower.poll() is None, err.read_text()
        worker.start()
        _chatter(base_url)

        log = worker.http.get("/v2/instances/f-1/log", headers={"Range": "bytes=0-"}).content
        assert log.count(b"GET /v1/models") >= 9
        wait_for(lambda: out.read_bytes() == log, "the follower to print the whole log")
        assert worker.http.delete("/v2/vllm/instances/f-1").status_code == 200
        assert follower.wait(timeout=30) == 0, err.read_text()
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        worker.close()
    assert out.read_bytes() == log  # every byte once: nothing lost, nothing twice
    assert "resuming at byte" in err.read_text()
    assert "Traceback" not in err.read_text()
    assert worker.leftovers == set()


def test_idle_connections_outlive_the_clients_pools(tmp_path: Path) -> None:
    assert KEEP_ALIVE_S > CLIENT_POOL_S
    worker = ServeProcess(tmp_path)
    worker.start()
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().read() == b'{"status":"OK"}'
        first = connection.sock
        time.sleep(CLIENT_POOL_S + 1)  # idle as long as a pooled connection may be
        connection.request("GET", "/health")  # on the same socket: fails if the worker closed it
        assert connection.getresponse().status == 200 and connection.sock is first
    finally:
        connection.close()
        worker.close()
    assert worker.leftovers == set()

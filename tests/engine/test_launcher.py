"""The launcher deployer with real vLLM (CPU) and the tiny local model.

At most two vLLM servers run at once; every test deletes what it started, and the module's
last step shuts the daemon down and checks that no process is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from berth.deployers.base import InvalidWorkload
from berth.schemas.workload import WorkloadState
from berth.testing import free_port, serve_plan, wait_http_ok
from tests.support.processes import alive, group_exists
from tests.support.waiting import eventually

pytestmark = pytest.mark.vllm

START_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launcher")


@pytest.fixture(scope="module")
def deployer(run_dir):
    from berth.deployers.launcher import LauncherDeployer

    launcher = LauncherDeployer(run_dir=run_dir)
    yield launcher
    launcher.shutdown(timeout=5.0)


# -- helpers -------------------------------------------------------------------------------


def _post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def _wait_ready(deployer, name: str, port: int) -> float:
    def failed() -> str | None:
        status = deployer.get(name)
        return status.reason if status.state.terminal else None

    return wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=START_TIMEOUT, give_up=failed)


def _ask_both_apis(model: str, port: int) -> None:
    chat = _post(port, "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
    })
    assert chat["choices"][0]["message"]["role"] == "assistant"
    completion = _post(port, "/v1/completions", {"model": model, "prompt": "hello", "max_tokens": 4})
    assert completion["usage"]["completion_tokens"] == 4


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _daemon_pid(deployer) -> int:
    info = deployer.daemon.ping()
    assert info is not None, "the launcher daemon is not running"
    return int(info["pid"])


# -- tests ---------------------------------------------------------------------------------


def test_bad_options_are_refused_at_create(deployer, tiny_model) -> None:
    with pytest.raises(InvalidWorkload, match="max-model-len.*notanumber"):
        deployer.create(serve_plan("bad-len", str(tiny_model), free_port(), extra=["--max-model-len", "notanumber"]))
    with pytest.raises(InvalidWorkload, match="unrecognized arguments: --no-such-flag"):
        deployer.create(serve_plan("bad-flag", str(tiny_model), free_port(), extra=["--no-such-flag"]))
    assert [s.name for s in deployer.list()] == []


def test_two_instances_concurrently(deployer, tiny_model) -> None:
    model = str(tiny_model)
    ports = {"one": free_port(), "two": free_port()}
    statuses = {}

    def create(name: str) -> None:
        statuses[name] = deployer.create(serve_plan(name, model, ports[name]))

    threads = [threading.Thread(target=create, args=(n,)) for n in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: s.state for n, s in statuses.items()} == {n: WorkloadState.RUNNING for n in ports}
    try:
        for name, port in ports.items():
            _wait_ready(deployer, name, port)
        for name, port in ports.items():
            _ask_both_apis(model, port)
        _check_logs_separate(deployer, ports)
        for status in statuses.values():
            _check_no_daemon_sockets(_daemon_pid(deployer), int(status.identity["pid"]))
    finally:
        finals = {name: deployer.delete(name, timeout=10.0) for name in ports}
    assert {n: s.state for n, s in finals.items()} == {n: WorkloadState.STOPPED for n in ports}
    for status in finals.values():
        assert not group_exists(int(status.identity["pid"]))
    assert eventually(lambda: _children_of(_daemon_pid(deployer)) == [])
    assert deployer.list() == []


def _check_logs_separate(deployer, ports: dict[str, int]) -> None:
    for name, port in ports.items():
        log = deployer.logs(name).data.decode()
        other = next(p for n, p in ports.items() if n != name)
        assert f"127.0.0.1:{port}" in log and f"127.0.0.1:{other}" not in log
        assert "POST /v1/chat/completions HTTP/1.1\" 200" in log
        assert "POST /v1/completions HTTP/1.1\" 200" in log
        head = deployer.logs(name, start=0, end=99)
        assert len(head.data) == 100 and head.total == len(log.encode())


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def _check_no_daemon_sockets(daemon_pid: int, instance_pid: int) -> None:
    """The daemon's listening socket (and any request connection) is closed in the instance."""
    shared = _socket_inodes(daemon_pid) & _socket_inodes(instance_pid)
    assert not shared, f"instance {instance_pid} inherited the daemon's sockets {shared}"


def test_sigkill_from_outside_is_reported_with_its_signal(deployer, tiny_model) -> None:
    port = free_port()
    status = deployer.create(serve_plan("victim", str(tiny_model), port))
    pid = int(status.identity["pid"])
    try:
        _wait_ready(deployer, "victim", port)
        os.kill(pid, signal.SIGKILL)
        assert eventually(lambda: deployer.get("victim").state.terminal)
        ended = deployer.get("victim")
        assert ended.state is WorkloadState.FAILED
        assert ended.containers[0].signal == signal.SIGKILL
        assert "SIGKILL" in ended.reason
        assert eventually(lambda: not group_exists(pid)), "engine core or worker outlived the server"
    finally:
        deployer.delete("victim")


def test_instances_survive_berth_being_killed_and_are_adopted(tiny_model, tmp_path_factory) -> None:
    """A berth process starts the daemon and an instance, then dies by SIGKILL; a new deployer
    over the same run_dir adopts the running instance; shutdown leaves no process."""
    from berth.deployers.launcher import LauncherDeployer

    run_dir = tmp_path_factory.mktemp("adopt")
    port = free_port()
    berth_proc = subprocess.Popen(
        [sys.executable, "-c", _BERTH_SCRIPT, str(run_dir), str(tiny_model), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    identity = json.loads(berth_proc.stdout.readline())  # type: ignore[union-attr]
    berth_proc.kill()
    berth_proc.wait()
    adopter = LauncherDeployer(run_dir=run_dir)
    try:
        status = adopter.adopt("adopted", identity)
        assert status.state is WorkloadState.RUNNING
        _wait_ready(adopter, "adopted", port)
        _ask_both_apis(str(tiny_model), port)
        daemon_pid = _daemon_pid(adopter)
    finally:
        assert adopter.shutdown(timeout=10.0)
    pid = int(identity["pid"])
    assert not group_exists(pid)
    assert eventually(lambda: not alive(daemon_pid))
    assert adopter.get("adopted").state is WorkloadState.STOPPED


_BERTH_SCRIPT = """
import json, sys
from berth.deployers.launcher import LauncherDeployer
from berth.testing import serve_plan
run_dir, model, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
status = LauncherDeployer(run_dir=run_dir).create(serve_plan("adopted", model, port))
print(json.dumps(status.identity), flush=True)
__import__("time").sleep(600)  # until the test kills this "berth" with SIGKILL
"""


def test_shutdown_leaves_no_process(deployer, tiny_model) -> None:
    port = free_port()
    status = deployer.create(serve_plan("last", str(tiny_model), port))
    _wait_ready(deployer, "last", port)
    daemon_pid = _daemon_pid(deployer)
    assert deployer.shutdown(timeout=10.0)
    assert not group_exists(int(status.identity["pid"]))
    assert eventually(lambda: not alive(daemon_pid))
    assert deployer.daemon.ping() is None
    assert deployer.get("last").state is WorkloadState.STOPPED
    deployer.delete("last")
    assert deployer.list() == []

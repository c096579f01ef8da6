"""Faults with real processes (``berth serve``, the process deployer, the fast vLLM stand-in):
the worker killed with ``kill -9`` while instances start, run and stop; an instance killed from
outside; the log disk full (a 1 MiB tmpfs). After each the registry matches what runs, and no
process, listening port or file descriptor is left behind.

The deployer-unreachable and locked-SQLite faults run in-process: see ``test_faults_inprocess``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening._answers import assert_clean_answer
from tests.hardening._serve import ServeProcess, fd_count, listening_ports, stray_processes

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[ServeProcess]:
    serve = ServeProcess(tmp_path, {"BERTH_RESTART_POLICY": "on-failure", "BERTH_RESTART_BACKOFF": "0.2"})
    serve.start()
    yield serve
    serve.close()
    assert serve.leftovers == set(), "processes left behind"
    assert serve.leftover_ports == set() and listening_ports(*serve.ports) == set(), "ports left held"


def put(worker: ServeProcess, instance_id: str, extra: str = "", **body: object) -> httpx.Response:
    options = f"--model /models/m --served-model-name {instance_id} {extra}".strip()
    return worker.http.put(f"/v2/vllm/instances/{instance_id}", json={"options": options, **body})


def processes_of(worker: ServeProcess, instance_id: str) -> set[int]:
    tag = f"{worker.data_dir.resolve()}/process/{instance_id}"
    return {pid for pid in stray_processes(worker.data_dir, exclude={worker.pid}) if _mentions(pid, tag)}


def _mentions(pid: int, workload_dir: str) -> bool:
    """The instance process (tag ``DIR:container`` in its env) or its shim (``DIR`` in its argv)."""
    needles = (f"{workload_dir}:".encode(), f"{workload_dir}\0".encode())
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes() + b"\0" + Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(needle in data for needle in needles)


def registry_matches_reality(worker: ServeProcess) -> None:
    """Every registered instance has its processes and its port; nothing else of ours runs."""
    listed = worker.http.get("/v2/vllm/instances").json()["instances"]
    expected: set[int] = set()
    for view in listed:
        pids = processes_of(worker, view["instance_id"])
        if view["status"] == "running":
            assert pids, f"{view['instance_id']} is {view['state']} but nothing runs"
        expected |= pids
    assert stray_processes(worker.data_dir, exclude={worker.pid}) == expected, "orphans"
    running = {view["port"] for view in listed if view["state"] == "running"}
    assert running <= listening_ports(*worker.ports)


def test_kill9_while_instances_start_run_and_stop(worker):
    assert put(worker, "runs").status_code == 201
    assert put(worker, "stops", "--ignore-term").status_code == 201
    worker.wait_state("runs", "running")
    worker.wait_state("stops", "running")
    assert put(worker, "starts", "--startup-delay 4").status_code == 201
    stopping = threading.Thread(target=lambda: _quietly(worker.http.delete, "/v2/vllm/instances/stops"))
    stopping.start()
    worker.wait_state("stops", "stopping")  # SIGTERM ignored: the stop waits out its grace period
    assert worker.get("starts")["state"] == "starting"
    worker.kill9()
    stopping.join(timeout=30)
    survivors = processes_of(worker, "runs")
    assert survivors, "the worker's death took its instances with it"

    worker.start()  # re-adopts runs and starts, finishes the interrupted stop of stops
    assert processes_of(worker, "runs") == survivors
    assert worker.wait_state("runs", "running")["restarts"] == 0
    assert worker.wait_state("starts", "running", timeout=30)["restarts"] == 0
    assert worker.http.get("/v2/vllm/instances/stops").status_code == 404
    assert processes_of(worker, "stops") == set()
    registry_matches_reality(worker)
    assert worker.http.delete("/v2/vllm/instances").json()["total_stopped"] == 2
    assert stray_processes(worker.data_dir, exclude={worker.pid}) == set()


def test_kill9_right_after_create_loses_nothing(worker):
    for index in range(3):
        assert put(worker, f"fresh-{index}").status_code == 201
    worker.kill9()
    worker.start()
    for index in range(3):
        worker.wait_state(f"fresh-{index}", "running")
    registry_matches_reality(worker)


def _quietly(call, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        call(*args)
    except httpx.HTTPError:
        pass


def test_instance_killed_from_outside_is_reported_and_restarted(worker):
    assert put(worker, "victim").status_code == 201
    assert put(worker, "once", restart_policy="never").status_code == 201
    first = worker.wait_state("victim", "running")
    worker.wait_state("once", "running")
    fds = fd_count(worker.pid)
    for instance_id in ("victim", "once"):
        identity = worker.http.get(f"/v2/instances/{instance_id}").json()["identity"]
        os.killpg(int(identity["pgid.default"]), signal.SIGKILL)
    again = worker.wait_state("victim", "running", restarts=1)
    assert again["port"] == first["port"]
    dead = worker.wait_state("once", "failed")
    assert dead["status"] == "stopped" and dead["exit_code"] == 128 + signal.SIGKILL and dead["reason"]
    assert processes_of(worker, "once") == set()
    registry_matches_reality(worker)
    assert fd_count(worker.pid) <= fds + 2


# -- the log disk full ---------------------------------------------------------------------------


def mount_tiny_disk(mount: Path) -> None:
    """A 1 MiB tmpfs at ``mount`` (root and CAP_SYS_ADMIN needed; the test is skipped otherwise)."""
    mount.mkdir(parents=True, mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip()}); needs root with CAP_SYS_ADMIN")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("full", ["process", "."], ids=["run-dir-full", "data-dir-full"])
def test_log_disk_full(tmp_path, mounts, full):
    """The deployer's run dir (instance logs and state) full, or the whole data dir (registry too)."""
    serve = ServeProcess(tmp_path, {"BERTH_RESTART_POLICY": "never"})
    disk = (serve.data_dir / full).resolve()
    mount_tiny_disk(disk)
    mounts.append(disk)
    serve.start()
    try:
        _disk_full_then_freed(serve, disk)
    finally:
        serve.close()
    assert serve.leftovers == set() and serve.leftover_ports == set()
    assert listening_ports(*serve.ports) == set()


def _disk_full_then_freed(serve: ServeProcess, disk: Path) -> None:
    assert put(serve, "before").status_code == 201
    serve.wait_state("before", "running")
    filler = _fill(disk)
    answers = [put(serve, f"full-{index}") for index in range(3)]
    answers += [serve.http.get(url) for url in ("/v2/vllm/instances", "/v2/vllm/instances/before",
                                                "/v2/vllm/instances/before/log", "/metrics", "/health")]
    for answer in answers:
        assert_clean_answer(answer.status_code, answer.headers.get("content-type", ""), answer.content,
                            unavailable_ok=True)
    assert {a.status_code for a in answers[:3]} == {503}
    assert serve.http.get("/health").status_code == 200
    time.sleep(1.0)  # the watcher sees the instances that could not write their log
    filler.unlink()
    assert put(serve, "after").status_code == 201
    serve.wait_state("after", "running")
    assert serve.get("before")["state"] in ("running", "failed")
    registry_matches_reality(serve)
    assert serve.http.delete("/v2/vllm/instances").status_code == 200
    assert stray_processes(serve.data_dir, exclude={serve.pid}) == set()

"""The container deployer on the test Podman engine: a busybox workload created, logged and deleted.

gpustack-runtime reads its engine choice once per process, and this pytest process has already
imported it (for Docker, by default), so the deployer runs in a child Python process started with
``podman_env()`` (``GPUSTACK_RUNTIME_DEPLOY=podman`` and the test engine's socket). The child prints
what each call returned as JSON; the test checks it, then asks the engine itself whether anything
of the workload is left. Needs ``scripts/setup_podman.sh`` (``make test`` runs it, as root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.engines import PODMAN_SOCKET, podman_env

pytestmark = [pytest.mark.podman, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = "berth-test/busybox:local"
GREETING = "hello from podman"

CHILD = r'''
import json, sys, time
from gpustack_runtime.deployer import Container, ContainerExecution, ContainerRestartPolicyEnum, WorkloadPlan
from berth.deployers import WorkloadNotFound
from berth.deployers.container import ContainerDeployer

name, image, greeting = sys.argv[1:4]
script = f"echo '{greeting}'; trap 'exit 0' TERM; while :; do sleep 0.2; done"
run = Container(name="default", image=image, restart_policy=ContainerRestartPolicyEnum.NEVER,
                execution=ContainerExecution(command=["sh", "-c"], args=[script]))
deployer = ContainerDeployer(image_pull_policy="Never")
out = {}
try:
    out["created"] = deployer.create(WorkloadPlan(name=name, host_network=True, containers=[run])).state.value
    deadline = time.monotonic() + 60
    logs = b""
    while greeting.encode() not in logs and time.monotonic() < deadline:
        time.sleep(0.2)
        logs = deployer.logs(name).data
    out["state"] = deployer.get(name).state.value
    out["logs"] = logs.decode()
    out["listed"] = [w.name for w in deployer.list()]
    out["deleted"] = deployer.delete(name, timeout=5).state.value
    try:
        deployer.get(name)
        out["after_delete"] = "still there"
    except WorkloadNotFound:
        out["after_delete"] = "not found"
finally:
    try:
        deployer.delete(name, timeout=0)
    except WorkloadNotFound:
        pass
    print(json.dumps(out))
'''


def engine_containers(name: str) -> list[str]:
    """Ids of the test engine's containers labelled for workload ``name``."""
    listing = subprocess.run(
        ["podman", "--url", f"unix://{PODMAN_SOCKET}", "ps", "-aq", "--filter",
         f"label=runtime.gpustack.ai/workload={name}"],
        capture_output=True, text=True, timeout=60, check=True)
    return listing.stdout.split()


def test_busybox_workload_created_logged_and_deleted_on_podman() -> None:
    env = {**os.environ, **podman_env(), "PYTHONPATH": str(ROOT)}
    name = f"berth-t-{uuid.uuid4().hex[:8]}-podman"
    child = subprocess.run([sys.executable, "-c", CHILD, name, BUSYBOX, GREETING],
                           env=env, capture_output=True, text=True, timeout=240, check=False)
    assert child.returncode == 0, f"the child failed:\n{child.stdout}\n{child.stderr}"
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["created"] in ("starting", "running"), out
    assert out["state"] == "running", out
    assert GREETING in out["logs"], out
    assert name in out["listed"], out
    assert out["deleted"] == "stopped", out
    assert out["after_delete"] == "not found", out
    assert engine_containers(name) == [], "the workload's containers are still in the Podman engine"

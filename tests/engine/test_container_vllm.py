"""A real vLLM (CPU, tiny local model) in a container: planned by ``VLLMServer``, run by gpustack-runtime.

The spec is a CPU one: no GPU, the local ``berth-test/vllm-cpu:local`` image (the host's
interpreter and virtualenv at their own paths, built by ``scripts/setup_docker.sh``), the model's
directory mounted by the plan itself. The server must become healthy and answer
``/v1/chat/completions``; deleting the workload must leave no container or volume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from berth.backends.plan import ServePlan
from berth.backends.vllm import VLLMServer
from berth.deployers.container import ContainerDeployer
from berth.schemas.spec import DeploymentSpec
from tests.support.docker_objects import leftovers
from tests.support.engines import unavailable
from tests.support.ports import free_port

pytestmark = [pytest.mark.docker, pytest.mark.vllm]

IMAGE = "berth-test/vllm-cpu:local"
READY_TIMEOUT = 420.0  # a cold CPU start on a busy two-core machine can take minutes


def require_vllm_image() -> None:
    """The image must exist and hold this interpreter's virtualenv."""
    fmt = '{{ index .Config.Labels "berth.io/venv" }}'
    out = subprocess.run(["docker", "image", "inspect", "-f", fmt, IMAGE], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        unavailable("docker", f"image {IMAGE} is missing (run: make docker-engine, as root)")
    venv = os.path.realpath(sys.prefix)  # the image holds the venv at its real path (.venv may be a link)
    if out.stdout.strip() != venv:
        unavailable("docker", f"image {IMAGE} holds {out.stdout.strip()!r}, not {venv!r} (run: make docker-engine)")


def cpu_spec(name: str, model: Path, port: int) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "model": {
                "name": "tiny",
                "backend": "vLLM",
                "image_name": IMAGE,
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "backend_parameters": ["--enforce-eager", "--max-model-len", "512"],
            },
            "instance": {"name": name, "model_name": "tiny", "worker_id": 1, "worker_ip": "127.0.0.1", "ports": [port]},
            "worker": {"id": 1, "ip": "127.0.0.1", "ifname": "lo"},
            "config": {"shm_size_gib": 1},
            "model_path": str(model),
        }
    )


@pytest.fixture
def deployer() -> Iterator[ContainerDeployer]:
    require_vllm_image()
    dep = ContainerDeployer(image_pull_policy="Never")
    yield dep
    dep.close()


@pytest.fixture
def served(deployer: ContainerDeployer, tiny_model: Path) -> Iterator[ServePlan]:
    """The plan, created on the engine; deleted (and checked gone) at teardown, even on failure."""
    name = f"berth-t-{uuid.uuid4().hex[:8]}-vllm"
    plan = VLLMServer.from_spec(cpu_spec(name, tiny_model, free_port())).plan()
    deployer.create(plan.workload)
    try:
        yield plan
    finally:
        deployer.delete(name, timeout=10)
        assert leftovers(name) == [], "the vLLM workload left containers or volumes behind"


def wait_healthy(deployer: ContainerDeployer, plan: ServePlan) -> None:
    assert plan.readiness_url is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        status = deployer.get(plan.name)
        if status.state.terminal:
            log = deployer.logs(plan.name)
            tail = deployer.logs(plan.name, start=max(0, log.total - 4000)).data.decode(errors="replace")
            pytest.fail(f"vLLM ended before it was ready: {status.reason}\n{tail}")
        try:
            if httpx.get(plan.readiness_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vLLM was not healthy within {READY_TIMEOUT:.0f} s")


def test_planned_vllm_container_answers_a_chat(deployer: ContainerDeployer, served: ServePlan) -> None:
    run = served.workload.containers[0]
    assert run.image == IMAGE and run.execution is not None
    assert run.execution.command == ["vllm", "serve"]
    wait_healthy(deployer, served)

    answer = httpx.post(
        f"{served.base_url}/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] > 0

    status = deployer.get(served.name)
    assert status.state.value == "running"
    assert b"Application startup complete" in deployer.logs(served.name).data

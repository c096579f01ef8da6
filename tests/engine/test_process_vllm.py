"""A real vLLM server (CPU, tiny local model) run by the process deployer from a hand-made plan.

Checks that it answers ``/v1/chat/completions`` and that ``delete`` leaves no process behind,
vLLM's engine-core children included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gpustack_runtime.deployer import Container, ContainerEnv, ContainerExecution, ContainerPort, WorkloadPlan

from berth.deployers import INSTANCE_LABEL, MANAGED_LABEL
from berth.deployers._stdlib import proc
from berth.deployers.process._state import TAG_ENV, process_tag
from berth.deployers.process import ProcessDeployer
from berth.schemas.workload import WorkloadState
from tests.support.ports import free_port

pytestmark = pytest.mark.vllm

READY_TIMEOUT = 420.0  # a cold CPU start on a busy two-core machine can take minutes


def vllm_plan(name: str, model: Path, port: int) -> WorkloadPlan:
    args = [
        str(model), "--max-model-len", "512", "--enforce-eager",
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny",
    ]
    run = Container(
        image="vllm/vllm-openai:cpu",
        name="default",
        execution=ContainerExecution(command=["vllm", "serve"], args=args, privileged=True),
        envs=[ContainerEnv(name="VLLM_CPU_KVCACHE_SPACE", value="1"), ContainerEnv(name="OMP_NUM_THREADS", value="1")],
        ports=[ContainerPort(internal=port)],
    )
    labels = {MANAGED_LABEL: "true", INSTANCE_LABEL: name}
    return WorkloadPlan(name=name, labels=labels, host_network=True, containers=[run])


def wait_healthy(deployer: ProcessDeployer, name: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        status = deployer.get(name)
        if status.state.terminal:
            tail = deployer.logs(name, start=max(0, deployer.logs(name).total - 4000)).data.decode(errors="replace")
            pytest.fail(f"vLLM ended before it was ready: {status.reason}\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vLLM was not healthy within {READY_TIMEOUT:.0f} s")


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    left = proc.mentioning(str(path))
    proc.send(left, 9)
    assert not left, f"processes left behind: {sorted(left)}"


def test_vllm_serves_and_stops_without_leftovers(tiny_model: Path, run_dir: Path) -> None:
    deployer = ProcessDeployer(run_dir)
    port = free_port()
    deployer.create(vllm_plan("tiny", tiny_model, port))
    tag = (TAG_ENV, process_tag(str(run_dir / "tiny"), "default"))
    try:
        wait_healthy(deployer, "tiny", port)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["role"] == "assistant"
        family = proc.members(tag=tag)
        assert len(family) >= 2, "expected the API server and its engine-core process"
        assert deployer.get("tiny").state is WorkloadState.RUNNING
    finally:
        last = deployer.delete("tiny", timeout=30)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert not any(proc.start_time(pid) for pid in family)
    assert not proc.members(tag=tag)

"""One contract, every deployer: the cases of ``test_contract.py`` run against each.

``memory``, ``process`` and ``launcher`` (marker ``vllm``) run in this process. gpustack-runtime
reads its engine from the environment once per process, so ``container`` runs in a pytest of its
own per engine (``test_engines.py``: Docker, marker ``docker``; Podman, marker ``podman``), with
``BERTH_CONTRACT_ENGINE`` naming the engine; there the cases run against ``container`` only.

Each kind has a :class:`Subject`: the deployer, how to reopen it (a new object over the same
state, as after a berth restart; the fake's state is the object itself), and the plans its
cases run: a stand-in that lives until stopped (busybox ``sh`` for the process and container
deployers), or ``vllm serve`` with the tiny local model for the launcher, which runs nothing else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gpustack_runtime.deployer import Container, ContainerExecution, WorkloadPlan

from berth.deployers import RAY_HEAD_CONTAINER, RUN_CONTAINER, Deployer, WorkloadNotFound, get_deployer
from berth.testing import free_port, serve_plan

#: Set by test_engines.py for the inner run on one container engine (docker or podman).
ENGINE_ENV = "BERTH_CONTRACT_ENGINE"
#: The stand-in image both test engines hold (scripts/setup_docker.sh, scripts/setup_podman.sh).
BUSYBOX = "berth-test/busybox:local"
#: Lives until SIGTERM, then exits 0 at once (also as a container's first process).
STAND_IN = "echo contract; trap 'exit 0' TERM; while true; do sleep 1; done"


def kinds() -> list[object]:
    if os.environ.get(ENGINE_ENV):
        return ["container"]
    return ["memory", pytest.param("process", marks=pytest.mark.subprocess),
            pytest.param("launcher", marks=pytest.mark.vllm)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kind" in metafunc.fixturenames:
        metafunc.parametrize("kind", kinds(), scope="module")


def stand_in(name: str) -> Container:
    """A container of ``name`` running the stand-in."""
    return Container(
        name=name,
        image=BUSYBOX,
        execution=ContainerExecution(command=["sh", "-c", STAND_IN]),
    )


@dataclass
class Subject:
    """A deployer under test and the plans its cases run."""

    kind: str
    deployer: Deployer
    reopen: Callable[[], Deployer]
    live_plan: Callable[[str], WorkloadPlan]
    prefix: str = field(default_factory=lambda: f"ct{uuid.uuid4().hex[:6]}")
    made: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        """A workload name of this run (cleaned up at the end)."""
        name = f"{self.prefix}-{suffix}"
        self.made.append(name)
        return name

    def sidecar_plan(self, name: str) -> WorkloadPlan:
        """A run container and a ``ray-head`` sidecar, as a Ray leader's plan has them."""
        plan = self.live_plan(name)
        plan.containers = [*(plan.containers or []), stand_in(RAY_HEAD_CONTAINER)]
        return plan

    def cleanup(self) -> None:
        for name in self.made:
            try:
                self.deployer.delete(name, timeout=5.0)
            except WorkloadNotFound:
                continue


def _plain_plan(name: str) -> WorkloadPlan:
    return WorkloadPlan(name=name, containers=[stand_in(RUN_CONTAINER)])


def _build(kind: str, tmp: Path, tiny_model: Callable[[], Path]) -> Subject:
    if kind == "memory":
        deployer = get_deployer("memory")
        return Subject(kind, deployer, lambda: deployer, _plain_plan)
    if kind == "container":
        make = lambda: get_deployer("container", image_pull_policy="Never")  # noqa: E731 - no registry here
        return Subject(kind, make(), make, _plain_plan)
    make = lambda: get_deployer(kind, run_dir=str(tmp))  # noqa: E731
    if kind == "process":
        return Subject(kind, make(), make, _plain_plan)
    model = str(tiny_model())
    return Subject(kind, make(), make, lambda name: serve_plan(name, model, free_port()))


@pytest.fixture(scope="module")
def subject(kind: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Subject]:
    tmp = tmp_path_factory.mktemp(f"contract-{kind}")
    made = _build(kind, tmp, lambda: request.getfixturevalue("tiny_model"))
    try:
        yield made
    finally:
        made.cleanup()
        made.deployer.shutdown(timeout=5.0)
        made.deployer.close()

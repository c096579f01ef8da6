"""The container deployer against a real Docker engine, with busybox commands standing in for vLLM.

A plan shaped like a distributed leader's (a run container and a ``ray-head`` sidecar sharing a
``/tmp`` volume, the model's directory mounted at its own path, named ports on the host
network, a shared-memory size) runs through gpustack-runtime; everything the plan says is
checked from inside the containers, through their logs and the ports they serve. Then the
failure paths: a non-zero exit, a missing image, and stopping within (and past) a grace period.

Needs the engine and images of ``scripts/setup_docker.sh`` (``make docker-engine``).
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerMount,
    ContainerPort,
    ContainerRestartPolicyEnum,
    WorkloadPlan,
)

from berth.deployers import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    RAY_HEAD_CONTAINER,
    RUN_CONTAINER,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.deployers.container import ContainerDeployer
from berth.schemas.workload import WorkloadState, WorkloadStatus
from tests.support.docker_objects import leftovers, sweep
from tests.support.engines import unavailable
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

BUSYBOX = "berth-test/busybox:local"
SHM_BYTES = 64 << 20
WAIT = 60.0


# -- helpers -----------------------------------------------------------------------------------


def require_image(image: str) -> None:
    """Skip (fail under CI) when ``image`` is not in the engine."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if found.returncode == 0:
        return
    unavailable("docker", f"image {image} is missing from the engine (run: make docker-engine, as root)")


def http_text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


def wait_state(deployer: ContainerDeployer, name: str, done: Callable[[WorkloadStatus], bool]) -> WorkloadStatus:
    def check() -> WorkloadStatus | None:
        status = deployer.get(name)
        return status if done(status) else None

    return wait_for(check, f"workload {name} to reach the expected state")  # type: ignore[return-value]


def container(name: str, command: list[str], args: list[str] | None = None, **extra: object) -> Container:
    return Container(
        name=name,
        image=str(extra.pop("image", BUSYBOX)),
        restart_policy=ContainerRestartPolicyEnum.NEVER,
        execution=ContainerExecution(privileged=True, command=command, args=args),
        **extra,  # type: ignore[arg-type]
    )


def workload(name: str, *containers: Container) -> WorkloadPlan:
    labels = {MANAGED_LABEL: "true", INSTANCE_LABEL: name}
    return WorkloadPlan(name=name, labels=labels, host_network=True, shm_size=SHM_BYTES, containers=list(containers))


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployer() -> Iterator[ContainerDeployer]:
    require_image(BUSYBOX)
    dep = ContainerDeployer(image_pull_policy="Never")  # no registry here: never try to pull
    yield dep
    dep.close()


@pytest.fixture
def new_name() -> Iterator[Callable[[str], str]]:
    """Hands out workload names; deletes each at teardown and asserts nothing of it is left."""
    names: list[str] = []

    def make(suffix: str) -> str:
        names.append(f"berth-t-{uuid.uuid4().hex[:8]}-{suffix}")
        return names[-1]

    yield make
    dep = ContainerDeployer()
    for name in names:
        try:
            dep.delete(name, timeout=0)
        finally:
            left = leftovers(name)
            sweep(name)
        assert left == [], f"workload {name} left containers or volumes behind: {left}"


# -- a leader-shaped plan ---------------------------------------------------------------------

RUN_SCRIPT = """
echo "== env"; env | sort
echo "== shm"; df -k /dev/shm
echo "== model"; ls "$MODEL_DIR"
echo "from-run" > /tmp/shared-by-run
mkdir -p /srv && echo "run-serves" > /srv/index.html
exec httpd -f -p "127.0.0.1:$RUN_PORT" -h /srv
"""

SIDECAR_SCRIPT = """#!/bin/sh
echo "== sidecar"
echo "SIDECAR_ONLY=$SIDECAR_ONLY"
while [ ! -f /tmp/shared-by-run ]; do sleep 0.2; done
echo "shared: $(cat /tmp/shared-by-run)"
mkdir -p /srv && echo "sidecar-serves" > /srv/index.html
exec httpd -f -p "127.0.0.1:$SIDECAR_PORT" -h /srv
"""


def leader_plan(name: str, model_dir: Path, run_port: int, sidecar_port: int) -> WorkloadPlan:
    tmp = ContainerMount(path="/tmp", volume="tmp-volume")
    model = ContainerMount(path=str(model_dir))
    envs = [
        ContainerEnv(name="MODEL_DIR", value=str(model_dir)),
        ContainerEnv(name="RUN_PORT", value=str(run_port)),
        ContainerEnv(name="BERTH_TEST_VALUE", value="spaces & $ymbols 'kept'"),
    ]
    run = container(RUN_CONTAINER, ["sh", "-c"], [RUN_SCRIPT], envs=envs, mounts=[model, tmp],
                    ports=[ContainerPort(internal=run_port)])
    sidecar = container(RAY_HEAD_CONTAINER, [], None, mounts=[model, tmp],
                        envs=[ContainerEnv(name="SIDECAR_PORT", value=str(sidecar_port)),
                              ContainerEnv(name="SIDECAR_ONLY", value="yes")],
                        ports=[ContainerPort(internal=sidecar_port)])
    assert sidecar.execution is not None
    sidecar.execution.command, sidecar.execution.command_script = None, SIDECAR_SCRIPT
    return workload(name, run, sidecar)


def test_run_container_and_sidecar_run_as_planned(deployer, new_name, tmp_path):
    name = new_name("leader")
    model_dir = tmp_path / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    run_port, sidecar_port = free_port(), free_port()

    created = deployer.create(leader_plan(name, model_dir, run_port, sidecar_port))
    assert created.name == name and created.deployer == "container"
    assert {c.name for c in created.containers} == {RUN_CONTAINER, RAY_HEAD_CONTAINER}

    # ports: each container serves on the host network at the port the plan declares
    assert wait_for(lambda: http_text(run_port), "the run container's port") == "run-serves\n"
    assert wait_for(lambda: http_text(sidecar_port), "the sidecar's port") == "sidecar-serves\n"

    status = deployer.get(name)
    assert status.state is WorkloadState.RUNNING
    assert [c.state for c in status.containers] == [WorkloadState.RUNNING, WorkloadState.RUNNING]
    assert status.labels[MANAGED_LABEL] == "true" and status.labels[INSTANCE_LABEL] == name
    assert set(status.identity) == {f"container/{RUN_CONTAINER}", f"container/{RAY_HEAD_CONTAINER}"}
    assert name in [s.name for s in deployer.list()]

    run_log = deployer.logs(name).data.decode()
    side_log = deployer.logs(name, container=RAY_HEAD_CONTAINER).data.decode()
    # env, mounts and shm size, as seen from inside
    assert "BERTH_TEST_VALUE=spaces & $ymbols 'kept'" in run_log
    assert "config.json" in run_log
    shm_line = next(line for line in run_log.splitlines() if line.rstrip().endswith("/dev/shm"))
    assert shm_line.split()[1] == str(SHM_BYTES // 1024)
    # the ephemeral /tmp volume is shared; each container's log is its own stream
    assert "shared: from-run" in side_log and "SIDECAR_ONLY=yes" in side_log
    assert "SIDECAR_ONLY" not in run_log and "== env" not in side_log

    # byte ranges and following
    whole = deployer.logs(name).data
    part = deployer.logs(name, start=3, end=12)
    assert part.data == whole[3:13] and part.total == len(whole)
    assert deployer.logs(name, start=len(whole) + 10).data == b""
    stop = threading.Event()
    deadline = threading.Timer(WAIT, stop.set)  # never hang on a silent stream
    deadline.start()
    followed = b""
    for chunk in deployer.follow(name, container=RAY_HEAD_CONTAINER, start=3, stop=stop, poll=0.1):
        followed += chunk
        if b"shared: from-run" in followed:
            stop.set()
    deadline.cancel()
    assert b"shared: from-run" in followed
    assert followed.startswith(side_log.encode()[3:20])

    with pytest.raises(WorkloadExists):
        deployer.create(leader_plan(name, model_dir, run_port, sidecar_port))
    with pytest.raises(WorkloadNotFound, match="no container 'worker'"):
        deployer.logs(name, container="worker")

    last = deployer.delete(name, timeout=1)
    assert last is not None and last.state is WorkloadState.STOPPED
    assert leftovers(name) == []  # containers and the tmp volume are gone
    with pytest.raises(WorkloadNotFound):
        deployer.get(name)
    assert deployer.delete(name) is None


# -- failure paths -----------------------------------------------------------------------------


def test_non_zero_exit_is_failed_with_code_and_last_lines(deployer, new_name):
    name = new_name("crash")
    script = 'echo "loading"; echo "fatal: no model at /nowhere" >&2; exit 7'
    deployer.create(workload(name, container(RUN_CONTAINER, ["sh", "-c"], [script])))
    status = wait_state(deployer, name, lambda s: s.state.terminal)
    assert status.state is WorkloadState.FAILED
    assert status.exit_code == 7
    run = status.container(RUN_CONTAINER)
    assert run is not None and run.exit_code == 7 and run.state is WorkloadState.FAILED
    assert "exited with code 7" in status.reason
    assert "fatal: no model at /nowhere" in status.reason and "loading" in status.reason
    # stdout and stderr are one stream, but the engine does not order lines across the two
    assert sorted(deployer.logs(name).data.splitlines()) == [b"fatal: no model at /nowhere", b"loading"]


def test_clean_exit_is_stopped(deployer, new_name):
    name = new_name("done")
    deployer.create(workload(name, container(RUN_CONTAINER, ["sh", "-c"], ["echo done"])))
    status = wait_state(deployer, name, lambda s: s.state.terminal)
    assert status.state is WorkloadState.STOPPED and status.exit_code == 0


def test_missing_image_is_a_clear_error_and_leaves_nothing(deployer, new_name):
    name = new_name("noimage")
    image = "berth-test/not-built:never"
    tmp = ContainerMount(path="/tmp", volume="tmp-volume")
    plan = workload(name, container(RUN_CONTAINER, ["true"], image=image, mounts=[tmp]))
    with pytest.raises(InvalidWorkload, match="berth-test/not-built:never") as caught:
        deployer.create(plan)
    assert "not present locally" in str(caught.value)
    assert leftovers(name) == []


def test_stop_within_the_grace_period(deployer, new_name, tmp_path):
    name = new_name("graceful")
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f'trap "echo got-term > {marks}/term; exit 0" TERM; echo up; while :; do sleep 0.2; done'
    deployer.create(workload(name, container(RUN_CONTAINER, ["sh", "-c"], [script],
                                             mounts=[ContainerMount(path=str(marks))])))
    wait_for(lambda: deployer.logs(name).data == b"up\n", "the container to start")
    last = deployer.delete(name, timeout=30)
    assert last is not None and last.state is WorkloadState.STOPPED
    # it got SIGTERM and finished its handler: a kill would have left no mark
    assert (marks / "term").read_text() == "got-term\n"
    assert leftovers(name) == []


def test_a_container_ignoring_sigterm_is_killed_after_the_grace_period(deployer, new_name):
    name = new_name("stubborn")
    script = 'trap "" TERM; echo up; while :; do sleep 0.2; done'
    deployer.create(workload(name, container(RUN_CONTAINER, ["sh", "-c"], [script])))
    wait_for(lambda: deployer.logs(name).data == b"up\n", "the container to start")
    started = time.monotonic()
    deployer.delete(name, timeout=1)
    assert time.monotonic() - started >= 0.9  # it waited out the grace period before killing
    assert leftovers(name) == []

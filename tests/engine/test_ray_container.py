"""Real Ray clusters from berth's plans, run as containers on the local Docker engine.

The same two worker identities as the process deployer's test (leader 127.0.0.2, follower
127.0.0.3; ``tests/support/ray_cluster.py`` says what is real and what stands in), each with a
:class:`ContainerDeployer` of its own. Their plans come from ``VLLMServer.from_spec(...).plan()``
for a CPU worker with the image ``berth-test/vllm-cpu:local`` (the host interpreter and the
project's virtualenv, Ray included, at their own paths; ``scripts/setup_docker.sh``): the leader's
run container and ``ray-head`` sidecar share the plan's ``/tmp`` volume, the follower's run
container runs ``ray start --address=...``, all on the host network.

Both identities share one Docker engine here; their workloads do not collide because the planner
names a follower's workload ``<instance>-w<worker id>``. The model directory is a temporary,
empty one (the plan bind-mounts it; the stand-in driver reads no model).

A side's processes are the host processes in its containers' cgroups. Every test removes its
containers and volumes, even on failure, and checks that none is left and no process of them
lives on.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpustack_runtime.deployer import WorkloadPlan

from berth.backends.plan import ServePlan
from berth.deployers.base import Deployer, DeployerError
from berth.deployers.container import ContainerDeployer
from berth.schemas.workload import WorkloadStatus
from tests.support.docker_objects import RUNTIME_WORKLOAD_LABEL, docker_ids, leftovers, sweep
from tests.support.engines import unavailable
from tests.support.ray_cluster import (
    FOLLOWER_IP, LEADER_IP, Model, Pair, Workers, check_serving, check_sockets,
    clusters, make_instance, planned_ports, worker_settings,
)

pytestmark = [pytest.mark.docker, pytest.mark.ray]

IMAGE = "berth-test/vllm-cpu:local"


# -- the engine --------------------------------------------------------------------------------


def in_image(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a throw-away container of :data:`IMAGE` (no network)."""
    try:
        return subprocess.run(["docker", "run", "--rm", "--network", "none", IMAGE, *command],
                              capture_output=True, text=True, check=False, timeout=120)
    except subprocess.TimeoutExpired:
        unavailable("docker", f"{' '.join(command)} in {IMAGE} did not answer within 120 s")
        raise


def require_ray_image() -> None:
    """The image must run this Ray's ``ray`` (first on its PATH, as the plans call it) and bash.

    Ray starts every worker process through ``bash -c`` (``ray/_private/runtime_env/
    context.py``), so a head without bash comes up and then dies with its first worker. Which
    virtualenv the image holds does not matter here, only that its Ray matches the one that
    reads the cluster's state from the test.
    """
    import ray

    out = in_image("ray", "--version")
    if out.returncode != 0 or ray.__version__ not in out.stdout:
        why = (out.stderr or out.stdout).strip()[-300:]
        unavailable("docker", f"{IMAGE} must run Ray {ray.__version__} (make ray, then make docker-engine): {why}")
    if in_image("bash", "--version").returncode != 0:
        unavailable("docker", f"{IMAGE} has no bash, which Ray starts its workers with: scripts/images/vllm-cpu/"
                "rootfs_paths.py must list it in HOST_TOOLS (then make docker-engine)")


def in_cgroups(container_ids: set[str]) -> set[int]:
    """Host pids of live processes inside any of the given containers (by their cgroup path)."""
    found: set[int] = set()
    if not container_ids:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        if any(ident in text for ident in container_ids):
            found.add(int(entry))
    return found


class Tracked(ContainerDeployer):
    """One identity's container deployer; remembers every workload and container it made."""

    def __init__(self) -> None:
        super().__init__(image_pull_policy="Never")  # no registry here: never try to pull
        self.containers: dict[str, set[str]] = {}

    def create(self, plan: WorkloadPlan) -> WorkloadStatus:
        seen = self.containers.setdefault(str(plan.name), set())
        try:
            return super().create(plan)
        finally:
            seen.update(docker_ids("ps", f"{RUNTIME_WORKLOAD_LABEL}={plan.name}"))

    def clean_up(self) -> list[str]:
        """Delete every workload made, force-remove what stays; say what had to be forced."""
        problems: list[str] = []
        for name, ids in self.containers.items():
            try:
                self.delete(name, timeout=5)
            except DeployerError as exc:
                problems.append(f"{name}: delete failed: {exc}")
            left, alive = leftovers(name), in_cgroups(ids)
            sweep(name)
            if left or alive:
                problems.append(f"{name}: containers/volumes {sorted(left)}, processes {sorted(alive)}")
        return problems


def container_processes(deployer: Deployer, plan: ServePlan) -> set[int]:
    """The probe of :class:`Pair`: live processes of every container ``plan`` ever had."""
    assert isinstance(deployer, Tracked)
    return in_cgroups(deployer.containers.get(plan.name, set()))


# -- the plans -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_image() -> str:
    require_ray_image()
    return IMAGE


@pytest.fixture
def model(ray_image: str, tmp_path: Path) -> Model:
    path = tmp_path / "models" / "m"
    path.mkdir(parents=True)
    return Model(path=str(path), image=ray_image, gpus=False, config={"shm_size_gib": 1})


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two identities, a container deployer each; every workload removed and checked at the end."""
    leader, follower = Tracked(), Tracked()
    workers = Pair(leader, follower, container_processes)
    try:
        yield workers
    finally:
        problems = follower.clean_up() + leader.clean_up()
        leader.close()
        follower.close()
    assert not problems, "left behind after delete: " + "; ".join(problems)


def unique(stem: str) -> str:
    return f"berth-t-{uuid.uuid4().hex[:8]}-{stem}"


# -- tests -------------------------------------------------------------------------------------


def test_leader_plan_shares_one_pid_namespace() -> None:
    """vLLM's ray.init() in the run container must see the ray-head sidecar's raylet."""
    model = Model(path="/models/org/m", image=IMAGE, gpus=False)
    instance = make_instance(unique("pid"), set(), model)
    assert instance.leader.workload.pid_shared and not instance.follower.workload.pid_shared


def test_two_workers_form_one_ray_cluster_in_containers(pair: Pair, model: Model) -> None:
    instance = make_instance(unique("ray"), set(), model)
    assert {c.image for p in (instance.leader, instance.follower) for c in p.workload.containers} == {IMAGE}
    with clusters(pair, instance):
        check_serving(pair, instance)


def test_two_instances_in_containers_get_disjoint_bands(pair: Pair, model: Model, tmp_path: Path) -> None:
    taken: set[int] = set()
    workers = Workers(
        worker_settings(tmp_path, LEADER_IP, 1, taken, gpus=False),
        worker_settings(tmp_path, FOLLOWER_IP, 2, taken, gpus=False),
        model,
    )
    first, second = workers.admit(unique("ray-a")), workers.admit(unique("ray-b"))
    assert planned_ports(first.leader).isdisjoint(planned_ports(second.leader))
    assert planned_ports(first.follower).isdisjoint(planned_ports(second.follower))
    with clusters(pair, first, second):
        a_leader, a_follower = check_sockets(pair, first)
        b_leader, b_follower = check_sockets(pair, second)
        assert not a_leader & b_leader and not a_follower & b_follower

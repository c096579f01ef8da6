"""Two worker identities on one machine forming one Ray cluster from berth's plans (``-m ray``).

Shared by the process-deployer and container-deployer tests of issue 8. The leader worker
(127.0.0.2) and the follower worker (127.0.0.3) each get their plan from
``VLLMServer.from_spec(...).plan()`` exactly as the seed shapes it: the leader's run container
plus ``ray-head`` sidecar (``ray start --head --port=...``), the follower's run container running
``ray start --address=leader:port``. vLLM's Ray executor refuses the CPU platform, so only the
leader's run command is replaced, by :data:`STAND_IN`: a driver that joins the cluster, waits for
the follower node and prints what Ray's own API reports. Everything else is the plan's.

127.0.0.1 is not used as a node identity: Ray rewrites ``--node-ip-address=127.0.0.1`` to the
host's routable address, so a node "at 127.0.0.1" would really be reached off loopback. Bands lie
below Linux's ephemeral range (32768-60999), where no port-0 listener or outgoing connection can
take a port between choosing a band and binding it.

Which processes belong to a side is the deployer's business, so :class:`Pair` takes a
:data:`Probe`: the process deployer's tags, or the cgroups of a workload's containers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from berth.backends import VLLMServer
from berth.backends.plan import ServePlan
from berth.deployers import RAY_HEAD_CONTAINER, RUN_CONTAINER
from berth.deployers._stdlib import proc
from berth.deployers.process._ports import bound_ports
from berth.deployers.base import Deployer, WorkloadNotFound
from berth.schemas import DeploymentSpec, InstancePorts
from berth.schemas.workload import WorkloadState
from berth.utils.ports import BELOW_EPHEMERAL, free_port_range, parse_port_range
from berth.worker.admission._admission import Holdings, admit_spec
from berth.worker.settings import Settings
from tests.support.waiting import wait_for

__all__ = [
    "BAND",
    "FOLLOWER_IP",
    "LEADER_IP",
    "STAND_IN",
    "Instance",
    "Model",
    "Pair",
    "Probe",
    "Workers",
    "check_cluster",
    "check_gone",
    "check_serving",
    "clusters",
    "delete_all",
    "check_sockets",
    "check_state_api",
    "free_band",
    "listening_ports",
    "make_instance",
    "planned_ports",
    "wait_cluster",
    "worker_settings",
]

LEADER_IP = "127.0.0.2"
FOLLOWER_IP = "127.0.0.3"
BAND = 100  # ports per Ray node: 11 named ones, then the worker port range
FORM_TIMEOUT = 240.0
STOP_TIMEOUT = 15.0
RESTARTS = 2

STAND_IN = r"""
import argparse, json, sys, time
import ray
parser = argparse.ArgumentParser()
parser.add_argument("--ray-address", required=True)
parser.add_argument("--expect-nodes", type=int, required=True)
parser.add_argument("--wait", type=float, default=180)
opts, vllm_args = parser.parse_known_args()
print("stand-in for vllm serve", vllm_args, flush=True)
ctx = ray.init(address=opts.ray_address, logging_level="warning")
deadline = time.monotonic() + opts.wait
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= opts.expect_nodes:
        break
    if time.monotonic() > deadline:
        have = sorted(n["NodeManagerAddress"] for n in alive)
        print(f"ERROR: only {have} joined within {opts.wait} s", flush=True)
        sys.exit(3)
    time.sleep(0.5)
keys = ("NodeManagerAddress", "NodeManagerPort", "ObjectManagerPort", "MetricsExportPort",
        "MetricsAgentPort", "DashboardAgentListenPort", "RuntimeEnvAgentPort", "Resources")
report = {"gcs": ctx.address_info["gcs_address"],
          "nodes": [{k: n.get(k) for k in keys} for n in alive]}
print("CLUSTER " + json.dumps(report), flush=True)
while True:
    time.sleep(1)
"""

#: Which live processes belong to one side's workload (host pids).
Probe = Callable[[Deployer, ServePlan], set[int]]


# -- plans -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """What differs between the deployers' specs: the model's path and image, GPUs, config."""

    path: str = "/models/org/m"
    image: str | None = None
    gpus: bool = True
    config: dict[str, Any] = field(default_factory=dict)


def free_band(size: int, taken: set[int], start: int = 21000) -> int:
    """First port of ``size`` consecutive ports neither bound here nor in ``taken``, between
    ``start`` and the ephemeral range, picked at random (:func:`free_port_range`); added to ``taken``."""
    first, last = parse_port_range(free_port_range(size, (start, BELOW_EPHEMERAL[1]), avoid=taken))
    taken.update(range(first, last + 1))
    return first


@dataclass
class Instance:
    """One distributed instance: the leader's and the follower's plan."""

    leader: ServePlan
    follower: ServePlan

    @property
    def name(self) -> str:
        return self.leader.name


def spec(
    name: str,
    *,
    leader: bool,
    model: Model,
    ports: list[int] | None = None,
    config: dict[str, Any] | None = None,
) -> DeploymentSpec:
    """The instance as the leader (worker 1) or the follower (worker 2) receives it."""
    gpus: dict[str, Any] = {"gpu_indexes": [0]} if model.gpus else {}
    instance: dict[str, Any] = {
        "name": name,
        "model_name": "m",
        "worker_id": 1,
        "worker_ip": LEADER_IP,
        **gpus,
        "distributed_servers": {"subordinate_workers": [{"worker_id": 2, "worker_ip": FOLLOWER_IP, **gpus}]},
    }
    if ports is not None:
        instance["ports"] = ports
    worker: dict[str, Any] = {"id": 1 if leader else 2, "ip": LEADER_IP if leader else FOLLOWER_IP, "ifname": "lo"}
    if model.gpus:
        worker["gpu_devices"] = [{"index": 0, "vendor": "nvidia"}]
    data = {
        "model": {
            "name": "m",
            "backend_version": "0.32.0",
            # a model with its own image defaults to vLLM's mp executor (GPUStack 2.3): ask for Ray
            "backend_parameters": ["--distributed-executor-backend=ray"],
            **({"image_name": model.image} if model.image else {}),
        },
        "instance": instance,
        "worker": worker,
        "config": {**model.config, **(config or {})},
        "model_path": model.path,
    }
    return DeploymentSpec.model_validate(data)


def with_stand_in(leader: ServePlan, follower: ServePlan) -> Instance:
    """The pair of plans, the leader's vLLM command replaced by the stand-in driver."""
    assert leader.ports.ray is not None
    run = leader.workload.containers[0]
    assert run.name == RUN_CONTAINER and run.execution is not None
    assert leader.workload.containers[1].name == RAY_HEAD_CONTAINER
    gcs = f"{LEADER_IP}:{leader.ports.ray.gcs}"
    run.execution.command = ["python", "-c", STAND_IN, f"--ray-address={gcs}", "--expect-nodes=2"]
    return Instance(leader, follower)


def make_instance(name: str, taken: set[int], model: Model) -> Instance:
    """Plans with hand-picked free bands, each identity's ``ray_port_range`` set in its config."""
    leader_band, follower_band, http = free_band(BAND, taken), free_band(BAND, taken), free_band(3, taken)
    ports = [http, http + 1, http + 2]
    leader_config = {"ray_port_range": f"{leader_band}-{leader_band + BAND - 1}"}
    follower_config = {"ray_port_range": f"{follower_band}-{follower_band + BAND - 1}", "ray_head_port": leader_band}
    leader = VLLMServer.from_spec(spec(name, leader=True, model=model, ports=ports, config=leader_config)).plan()
    follower = VLLMServer.from_spec(spec(name, leader=False, model=model, ports=ports, config=follower_config)).plan()
    return with_stand_in(leader, follower)


@dataclass
class Workers:
    """Both identities' worker settings and what their instances hold, as berth's worker sees it."""

    leader: Settings
    follower: Settings
    model: Model
    held_leader: Holdings = field(default_factory=Holdings)
    held_follower: Holdings = field(default_factory=Holdings)

    def admit(self, name: str) -> Instance:
        """Admit the instance on both workers, as ``berth serve`` does: ports and Ray bands given."""
        gpus = self.model.gpus
        lead = admit_spec(spec(name, leader=True, model=self.model), self.leader, self.held_leader, shared_gpus=gpus)
        assert lead.ray_range is not None
        head_port = int(lead.ray_range.split("-")[0])
        ports = lead.spec.instance.ports
        follower_spec = spec(name, leader=False, model=self.model, ports=ports, config={"ray_head_port": head_port})
        follow = admit_spec(follower_spec, self.follower, self.held_follower, shared_gpus=gpus)
        self.held_leader = _hold(self.held_leader, name, ports, lead.ray_range)
        self.held_follower = _hold(self.held_follower, name, [], follow.ray_range)
        leader = VLLMServer.from_spec(lead.spec).plan()
        follower = VLLMServer.from_spec(follow.spec).plan()
        return with_stand_in(leader, follower)


def _hold(held: Holdings, owner: str, ports: list[int] | None, ray_range: str | None) -> Holdings:
    holding = InstancePorts.from_list(ports, ray_range=ray_range).held()
    return Holdings(ports={**held.ports, **dict.fromkeys(holding, owner)}, gpus=dict(held.gpus))


def worker_settings(tmp_path: Path, ip: str, worker_id: int, taken: set[int], *, gpus: bool = True) -> Settings:
    """One identity's settings: its own data dir, instance ports and Ray pool, all free here."""
    pool, instance_ports = free_band(2 * BAND, taken), free_band(10, taken)
    return Settings(
        data_dir=tmp_path / f"data-{worker_id}",
        worker_ip=ip,
        worker_id=worker_id,
        gpu_devices=[{"index": 0, "vendor": "nvidia"}] if gpus else [],
        instance_port_range=f"{instance_ports}-{instance_ports + 9}",
        ray_port_range=f"{pool}-{pool + 2 * BAND - 1}",
        ray_band_size=BAND,
    )


def planned_ports(plan: ServePlan) -> set[int]:
    """Every port the plan assigns: declared ones plus the Ray worker port range."""
    ports = {p.internal for c in plan.workload.containers for p in c.ports or []}
    ray = plan.ports.ray
    assert ray is not None
    return ports | set(range(ray.min_worker, ray.max_worker + 1))


# -- processes and sockets ---------------------------------------------------------------------


def listening_ports(pids: Iterable[int]) -> set[int]:
    """TCP ports the given processes listen on (sockets matched by inode in /proc/net)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# -- the two sides -----------------------------------------------------------------------------


@dataclass
class Pair:
    """The two worker identities: one deployer each, and how to find a side's processes."""

    leader: Deployer
    follower: Deployer
    probe: Probe
    restarts: dict[str, int] = field(default_factory=dict)

    def sides(self, instance: Instance) -> tuple[tuple[Deployer, ServePlan], tuple[Deployer, ServePlan]]:
        return (self.leader, instance.leader), (self.follower, instance.follower)

    def start(self, instance: Instance) -> None:
        """The leader first; the follower once the head's GCS listens (as a worker would retry)."""
        self.leader.create(instance.leader.workload)
        gcs = instance.leader.ports.ray.gcs  # type: ignore[union-attr]
        wait_for(lambda: gcs in bound_ports() or self.leader.get(instance.name).state.terminal, "the Ray head", FORM_TIMEOUT, poll=0.5)
        if not self.leader.get(instance.name).state.terminal:
            self.follower.create(instance.follower.workload)

    def stop(self, instance: Instance) -> None:
        self.follower.delete(instance.follower.name, timeout=STOP_TIMEOUT)
        self.leader.delete(instance.leader.name, timeout=STOP_TIMEOUT)

    def pids(self, instance: Instance) -> tuple[set[int], set[int]]:
        """Live processes of the leader's and of the follower's side."""
        return self.probe(self.leader, instance.leader), self.probe(self.follower, instance.follower)


def cluster_report(pair: Pair, instance: Instance) -> dict[str, Any] | None:
    """The stand-in's report once the cluster formed, else ``None``.

    An instance with a side that ended before the cluster formed is started again, at most
    ``RESTARTS`` times, as the worker's restart policy would: on a loaded host Ray's fixed 30 s
    wait for a new raylet to register with the GCS can run out.
    """
    text = pair.leader.logs(instance.name).data.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("CLUSTER "):
            return json.loads(line[len("CLUSTER ") :])  # type: ignore[no-any-return]
    if any(_ended(d, p) for d, p in pair.sides(instance)):
        if pair.restarts.get(instance.name, 0) >= RESTARTS:
            pytest.fail(f"cluster {instance.name} did not form:\n{describe(pair, instance)}")
        pair.restarts[instance.name] = pair.restarts.get(instance.name, 0) + 1
        pair.stop(instance)
        pair.start(instance)
    return None


def _ended(deployer: Deployer, plan: ServePlan) -> bool:
    try:
        return deployer.get(plan.name).state.terminal
    except WorkloadNotFound:
        return True


def describe(pair: Pair, instance: Instance) -> str:
    """Status and log tail of every container on both sides."""
    parts = []
    for deployer, plan in pair.sides(instance):
        if _ended(deployer, plan) and plan.name not in {w.name for w in deployer.list()}:
            parts.append(f"--- {plan.name}: not created")
            continue
        for container in plan.workload.containers:
            chunk = deployer.logs(plan.name, container=container.name)
            tail = deployer.logs(plan.name, container=container.name, start=max(0, chunk.total - 2500))
            status = deployer.get(plan.name).container(container.name)
            parts.append(f"--- {plan.name}/{container.name}: {status}\n{tail.data.decode(errors='replace')}")
    return "\n".join(parts)


def wait_cluster(pair: Pair, instance: Instance) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def formed() -> bool:
        report = cluster_report(pair, instance)
        if report is not None:
            found.append(report)
        return bool(found)

    wait_for(formed, f"cluster {instance.name} to form", FORM_TIMEOUT * (RESTARTS + 1), poll=0.5)
    return found[0]


# -- checks ------------------------------------------------------------------------------------


def check_cluster(report: dict[str, Any], instance: Instance) -> None:
    """Both nodes, at their identities' addresses, on exactly the ports their plans assign."""
    nodes = {n["NodeManagerAddress"]: n for n in report["nodes"]}
    assert set(nodes) == {LEADER_IP, FOLLOWER_IP}
    for ip, plan in ((LEADER_IP, instance.leader), (FOLLOWER_IP, instance.follower)):
        ray, node = plan.ports.ray, nodes[ip]
        assert ray is not None
        assert (node["NodeManagerPort"], node["ObjectManagerPort"]) == (ray.node_manager, ray.object_manager)
        assert (node["MetricsExportPort"], node["RuntimeEnvAgentPort"]) == (ray.metrics_export, ray.runtime_env_agent)
        assert (node["MetricsAgentPort"], node["DashboardAgentListenPort"]) == (
            ray.dashboard_agent_grpc, ray.dashboard_agent_listen,
        )
        assert node["Resources"]["CPU"] > 0 and node["Resources"][f"node:{ip}"] == 1
    assert "node:__internal_head__" in nodes[LEADER_IP]["Resources"]
    head = instance.leader.ports.ray
    assert head is not None
    assert report["gcs"] == f"{LEADER_IP}:{head.gcs}"
    follower_args = instance.follower.workload.containers[0].execution.args  # type: ignore[union-attr]
    assert f"--address={LEADER_IP}:{head.gcs}" in follower_args


def check_state_api(instance: Instance) -> None:
    """Ray's state API, through the dashboard at the plan's address, lists both nodes alive."""
    from ray.util.state import list_nodes

    head = instance.leader.ports.ray
    assert head is not None
    nodes = list_nodes(address=f"http://{LEADER_IP}:{head.dashboard}", timeout=60)
    alive = {n.node_ip: n for n in nodes if n.state == "ALIVE"}
    assert set(alive) == {LEADER_IP, FOLLOWER_IP}
    assert alive[LEADER_IP].is_head_node and not alive[FOLLOWER_IP].is_head_node


def check_sockets(pair: Pair, instance: Instance) -> tuple[set[int], set[int]]:
    """Every port either side listens on is one its plan assigns; the head's named ones listen."""
    head = instance.leader.ports.ray
    assert head is not None
    named = {head.gcs, head.dashboard, head.node_manager, head.client}
    seen: list[set[int]] = []

    def head_listens() -> bool:  # the dashboard and client server may open after the nodes join
        seen.append(listening_ports(pair.pids(instance)[0]))
        return named <= seen[-1]

    wait_for(head_listens, f"the Ray head of {instance.name} to listen on {sorted(named)}",
             FORM_TIMEOUT, poll=0.5)
    leader_pids, follower_pids = pair.pids(instance)
    leader_ports, follower_ports = listening_ports(leader_pids), listening_ports(follower_pids)
    assert leader_ports <= planned_ports(instance.leader), f"unplanned: {leader_ports - planned_ports(instance.leader)}"
    assert follower_ports <= planned_ports(instance.follower), (
        f"unplanned: {follower_ports - planned_ports(instance.follower)}"
    )
    return leader_ports, follower_ports


def check_serving(pair: Pair, instance: Instance) -> None:
    """A formed cluster as it should serve: Ray's state API, the sockets of both sides, and both
    workloads running."""
    check_state_api(instance)
    check_sockets(pair, instance)
    assert pair.leader.get(instance.name).state is WorkloadState.RUNNING
    assert pair.follower.get(instance.follower.name).state is WorkloadState.RUNNING


def check_gone(pair: Pair, instance: Instance) -> None:
    """No process of either side, none naming the head's address, no port of the bands bound."""
    leader_pids, follower_pids = pair.pids(instance)
    assert not leader_pids and not follower_pids, f"processes left: {sorted(leader_pids | follower_pids)}"
    head = instance.leader.ports.ray
    assert head is not None
    assert not proc.mentioning(f"{LEADER_IP}:{head.gcs}"), "a process still names the Ray head's address"
    bands = planned_ports(instance.leader) | planned_ports(instance.follower)
    assert not bands & bound_ports(), f"ports of the instance's bands still bound: {sorted(bands & bound_ports())}"


@contextmanager
def clusters(pair: Pair, *instances: Instance) -> Iterator[None]:
    """Runs the block with every instance started and its cluster formed (one after the other, to
    spare a small host); then stops them all and, when the block passed, :func:`check_gone` each."""
    try:
        for instance in instances:
            pair.start(instance)
            check_cluster(wait_cluster(pair, instance), instance)
        yield
    finally:
        for instance in instances:
            pair.stop(instance)
    for instance in instances:
        check_gone(pair, instance)


def delete_all(root: Path, *deployers: Deployer) -> None:
    """Delete every workload of ``deployers`` (followers first); kill, and fail on, any process
    still naming ``root`` (the directory the test's deployers run in)."""
    for deployer in deployers:
        for status in deployer.list():
            deployer.delete(status.name, timeout=5)
    left = proc.mentioning(str(root))
    proc.send(left, 9)
    assert not left, f"processes left behind: {sorted(left)}"

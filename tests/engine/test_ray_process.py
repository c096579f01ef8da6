"""Real Ray clusters from berth's plans, run by the process deployer: two worker identities.

The leader worker (127.0.0.2) and the follower worker (127.0.0.3) are two identities on this
machine, each with its own run directory and Ray band. Their plans come from
``VLLMServer.from_spec(...).plan()`` exactly as the seed shapes them: the leader's run container
plus ``ray-head`` sidecar (``ray start --head --port=...``), the follower's run container running
``ray start --address=leader:port``. vLLM's Ray executor refuses the CPU platform, so only the
leader's run container command is replaced, by a stand-in driver that joins the cluster, waits
for the follower node and prints what Ray's own API reports; everything else is the plan's.

127.0.0.1 is not used as a node identity: Ray rewrites ``--node-ip-address=127.0.0.1`` to the
host's routable address, so a node "at 127.0.0.1" would really be reached off loopback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.backends import VLLMServer
from berth.backends.plan import ServePlan
from berth.deployers import RAY_HEAD_CONTAINER, RUN_CONTAINER
from berth.deployers import _process_proc as proc
from berth.deployers._process_ports import bound_ports
from berth.deployers._process_state import TAG_ENV, process_tag
from berth.deployers.base import InvalidWorkload
from berth.deployers.process import ProcessDeployer
from berth.schemas import DeploymentSpec

pytestmark = pytest.mark.ray

LEADER_IP = "127.0.0.2"
FOLLOWER_IP = "127.0.0.3"
BAND = 100  # ports per Ray node: 10 fixed ones, then the worker port range
FORM_TIMEOUT = 240.0
STOP_TIMEOUT = 15.0
#: Ports a Ray head binds that the seed's plan does not assign: Ray's client server (default
#: 10001; two heads share it through SO_REUSEPORT, so a client may reach the wrong cluster) and
#: the autoscaler's and dashboard's metrics (AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT: the
#: second head on a host fails to bind them). The follower binds nothing outside its plan.
UNPLANNED_HEAD_PORTS = {10001, 44217, 44227}

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


# -- plans -----------------------------------------------------------------------------------


def free_band(size: int, taken: set[int], start: int = 46000) -> int:
    """First port of ``size`` consecutive ports neither bound here nor in ``taken``."""
    bound = bound_ports()
    for first in range(start, 60000, size):
        band = set(range(first, first + size))
        if band.isdisjoint(bound) and band.isdisjoint(taken):
            taken.update(band)
            return first
    raise AssertionError("no free port band on this host")


@dataclass
class Instance:
    """One distributed instance: the leader's and the follower's plan."""

    leader: ServePlan
    follower: ServePlan

    @property
    def name(self) -> str:
        return self.leader.name


def spec(name: str, *, leader: bool, band: int, http: int, head_port: int | None = None) -> DeploymentSpec:
    instance = {
        "name": name,
        "model_name": "m",
        "worker_id": 1,
        "worker_ip": LEADER_IP,
        "gpu_indexes": [0],
        "ports": [http, http + 1, http + 2],
        "distributed_servers": {"subordinate_workers": [{"worker_id": 2, "worker_ip": FOLLOWER_IP, "gpu_indexes": [0]}]},
    }
    worker = {
        "id": 1 if leader else 2,
        "ip": LEADER_IP if leader else FOLLOWER_IP,
        "ifname": "lo",
        "gpu_devices": [{"index": 0, "vendor": "nvidia"}],
    }
    config: dict[str, object] = {"ray_port_range": f"{band}-{band + BAND - 1}"}
    if head_port is not None:
        config["ray_head_port"] = head_port
    data = {
        "model": {"name": "m", "backend_version": "0.32.0"},
        "instance": instance,
        "worker": worker,
        "config": config,
        "model_path": "/models/org/m",
    }
    return DeploymentSpec.model_validate(data)


def make_instance(name: str, taken: set[int]) -> Instance:
    leader_band, follower_band = free_band(BAND, taken), free_band(BAND, taken)
    http = free_band(3, taken)
    leader = VLLMServer.from_spec(spec(name, leader=True, band=leader_band, http=http)).plan()
    follower_spec = spec(name, leader=False, band=follower_band, http=http, head_port=leader_band)
    follower = VLLMServer.from_spec(follower_spec).plan()
    assert leader.ports.ray is not None
    run = leader.workload.containers[0]
    assert run.name == RUN_CONTAINER and run.execution is not None
    gcs = f"{LEADER_IP}:{leader.ports.ray.gcs}"
    run.execution.command = ["python", "-c", STAND_IN, f"--ray-address={gcs}", "--expect-nodes=2"]
    return Instance(leader, follower)


def planned_ports(plan: ServePlan) -> set[int]:
    """Every port the plan assigns: declared ones plus the Ray worker port range."""
    ports = {p.internal for c in plan.workload.containers for p in c.ports or []}
    ray = plan.ports.ray
    assert ray is not None
    return ports | set(range(ray.min_worker, ray.max_worker + 1))


# -- processes and sockets -------------------------------------------------------------------


def tagged(deployer: ProcessDeployer, plan: ServePlan) -> set[int]:
    found: set[int] = set()
    for container in plan.workload.containers:
        tag = process_tag(os.path.join(deployer.run_dir, plan.name), container.name)
        found |= proc.members(tag=(TAG_ENV, tag))
    return found


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


def wait_cluster(deployer: ProcessDeployer, plan: ServePlan) -> dict[str, object]:
    """The stand-in's report of the formed cluster (fails with the logs when it does not form)."""
    deadline = time.monotonic() + FORM_TIMEOUT
    while time.monotonic() < deadline:
        text = deployer.logs(plan.name).data.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("CLUSTER "):
                return json.loads(line[len("CLUSTER "):])
        if deployer.get(plan.name).state.terminal:
            break
        time.sleep(0.5)
    head = deployer.logs(plan.name, container=RAY_HEAD_CONTAINER).data.decode(errors="replace")
    pytest.fail(f"cluster {plan.name} did not form: {deployer.get(plan.name).reason}\n{text[-3000:]}\n{head[-3000:]}")


# -- fixtures --------------------------------------------------------------------------------


@dataclass
class Pair:
    """The two worker identities: a process deployer each, over separate run directories."""

    leader: ProcessDeployer
    follower: ProcessDeployer

    def start(self, instance: Instance) -> None:
        self.leader.create(instance.leader.workload)
        self.follower.create(instance.follower.workload)

    def stop(self, instance: Instance) -> None:
        self.follower.delete(instance.follower.name, timeout=STOP_TIMEOUT)
        self.leader.delete(instance.leader.name, timeout=STOP_TIMEOUT)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    workers = Pair(ProcessDeployer(tmp_path / "leader"), ProcessDeployer(tmp_path / "follower"))
    yield workers
    for deployer in (workers.follower, workers.leader):
        for status in deployer.list():
            deployer.delete(status.name, timeout=5)
    left = proc.mentioning(str(tmp_path))
    proc.send(left, 9)
    assert not left, f"processes left behind: {sorted(left)}"


# -- tests -----------------------------------------------------------------------------------


def check_cluster(report: dict[str, object], instance: Instance) -> None:
    """Both nodes, at their identities' addresses, on exactly the ports their plans assign."""
    nodes = {n["NodeManagerAddress"]: n for n in report["nodes"]}  # type: ignore[attr-defined]
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
    """Every listening port of each side is one its plan assigns (the head's known gaps aside)."""
    leader_ports = listening_ports(tagged(pair.leader, instance.leader))
    follower_ports = listening_ports(tagged(pair.follower, instance.follower))
    head = instance.leader.ports.ray
    assert head is not None and {head.gcs, head.dashboard, head.node_manager} <= leader_ports
    assert leader_ports - planned_ports(instance.leader) <= UNPLANNED_HEAD_PORTS
    assert follower_ports <= planned_ports(instance.follower)
    return leader_ports, follower_ports


def check_gone(pair: Pair, instance: Instance) -> None:
    assert not tagged(pair.leader, instance.leader) and not tagged(pair.follower, instance.follower)
    bands = planned_ports(instance.leader) | planned_ports(instance.follower)
    assert not bands & bound_ports(), "a port of the instance's bands is still bound"


def test_two_workers_form_one_ray_cluster_from_their_plans(pair: Pair) -> None:
    instance = make_instance("dist-1", set())
    pair.start(instance)
    try:
        check_cluster(wait_cluster(pair.leader, instance.leader), instance)
        check_state_api(instance)
        check_sockets(pair, instance)
        assert pair.leader.get(instance.name).state.value == "running"
        assert pair.follower.get(instance.follower.name).state.value == "running"
    finally:
        pair.stop(instance)
    check_gone(pair, instance)


def test_two_instances_at_once_get_disjoint_bands(pair: Pair) -> None:
    taken: set[int] = set()
    first, second = make_instance("dist-a", taken), make_instance("dist-b", taken)
    assert planned_ports(first.leader).isdisjoint(planned_ports(second.leader))
    assert planned_ports(first.follower).isdisjoint(planned_ports(second.follower))
    pair.start(first)
    pair.start(second)
    try:
        for instance in (first, second):
            check_cluster(wait_cluster(pair.leader, instance.leader), instance)
        a_leader, a_follower = check_sockets(pair, first)
        b_leader, b_follower = check_sockets(pair, second)
        assert (a_leader & b_leader) <= UNPLANNED_HEAD_PORTS and not a_follower & b_follower
        clash = make_instance("dist-c", set())
        clash.leader.workload.containers[1].ports = first.leader.workload.containers[1].ports
        with pytest.raises(InvalidWorkload, match=r"port \d+/tcp declared by container 'ray-head'"):
            pair.leader.create(clash.leader.workload)
    finally:
        pair.stop(first)
        pair.stop(second)
    check_gone(pair, first)
    check_gone(pair, second)

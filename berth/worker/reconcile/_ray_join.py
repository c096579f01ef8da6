"""Has every follower of a distributed (Ray) leader joined its head? Asked of Ray's dashboard.

A leader's plan names its head (``ray-head`` sidecar: ``--node-ip-address``, ``--port``,
``--dashboard-host``, ``--dashboard-port``); its spec names the followers (subordinate workers'
``worker_ip``). While the leader starts, the watcher asks the dashboard
(``GET /nodes?view=summary``, Ray 2.x: ``data.summary[].raylet.{nodeManagerAddress,state}``)
which nodes are alive (through the worker's one engine client), says in the instance's reason who is still missing, and fails the
instance, naming the missing nodes, when they have not joined within the join timeout.
"""

from __future__ import annotations

from collections.abc import Iterable

from berth.backends.plan import ServePlan
from berth.deployers.base import RAY_HEAD_CONTAINER
from berth.schemas import DeploymentSpec
from berth.worker.engine import EngineClient, Readiness
from berth.worker.store import RayJoin

_HEAD_FLAGS = {"--node-ip-address": "ip", "--port": "gcs", "--dashboard-host": "dashboard_host",
               "--dashboard-port": "dashboard_port"}


def _head_flags(plan: ServePlan) -> dict[str, str]:
    for container in plan.workload.containers or []:
        if container.name == RAY_HEAD_CONTAINER and container.execution is not None:
            args = [*(container.execution.command or []), *(container.execution.args or [])]
            pairs = (arg.partition("=") for arg in args if arg.startswith("--"))
            return {_HEAD_FLAGS[key]: value for key, _, value in pairs if key in _HEAD_FLAGS}
    return {}


def _followers(spec: DeploymentSpec) -> dict[str, str]:
    """Follower address -> how to name it ("worker 8", or its name)."""
    named: dict[str, str] = {}
    for sub in spec.instance.subordinate_workers:
        if sub.worker_ip:
            who = f"worker {sub.worker_id}" if sub.worker_id is not None else (sub.worker_name or "worker")
            named[sub.worker_ip] = who
    return named


def join_plan(plan: ServePlan, spec: DeploymentSpec) -> RayJoin | None:
    """What the watcher checks for a Ray leader (kept in the record's endpoints), else None."""
    if plan.role != "leader" or plan.ports.ray is None:
        return None
    head = _head_flags(plan)
    followers = _followers(spec)
    if not followers or "ip" not in head:
        return None
    gcs = head.get("gcs") or str(plan.ports.ray.gcs)
    dashboard = f"{head.get('dashboard_host') or head['ip']}:{head.get('dashboard_port') or plan.ports.ray.dashboard}"
    return RayJoin(head=f"{head['ip']}:{gcs}", dashboard=f"http://{dashboard}", leader_ip=head["ip"],
                   followers=followers)


def missing_nodes(join: RayJoin, alive: Iterable[str]) -> list[str]:
    """The expected nodes not in ``alive``, each named: "leader 10.0.0.17", "follower 10.0.0.18 (worker 8)"."""
    alive = set(alive)
    missing = [] if join.leader_ip in alive else [f"leader {join.leader_ip}"]
    return missing + [f"follower {ip} ({who})" for ip, who in join.followers.items() if ip not in alive]


def join_readiness(engine: EngineClient, join: RayJoin, waited: float, limit: float) -> Readiness | None:
    """None when every node has joined (go on to the HTTP probe); else why not, failed past ``limit``."""
    alive = engine.ray_nodes(join.dashboard)
    missing = missing_nodes(join, alive or set())
    if not missing:
        return None
    quiet = "" if alive is not None else f" (its dashboard at {join.dashboard} does not answer)"
    if waited > limit:
        verb = "has" if len(missing) == 1 else "have"
        return Readiness(False, f"{', '.join(missing)} {verb} not joined the Ray head at {join.head}{quiet} "
                         f"after {limit:.0f} s", failed=True)
    return Readiness(False, f"waiting for followers: {', '.join(missing)} not yet in the Ray head at "
                     f"{join.head}{quiet}")

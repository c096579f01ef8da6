"""A Ray leader waits for its followers: asked of a fake Ray dashboard on loopback (127.0.0.2)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings
from berth.worker.engine import joined_nodes
from berth.worker.reconcile._ray_join import missing_nodes
from berth.worker.store import RayJoin
from berth.worker.store._states import InstanceState
from tests.support.ports import free_range
from tests.support.ray_cluster import FOLLOWER_IP, LEADER_IP, Model, free_band, spec


class Dashboard(ThreadingHTTPServer):
    """Answers ``GET /nodes?view=summary`` as Ray 2.x does, with the nodes in :attr:`alive`."""

    alive: set[str]


class _Handler(BaseHTTPRequestHandler):
    server: Dashboard

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/nodes":
            self.send_error(404)
            return
        summary = [{"raylet": {"nodeManagerAddress": ip, "state": "ALIVE"}} for ip in sorted(self.server.alive)]
        body = json.dumps({"result": True, "msg": "Node summary fetched.", "data": {"summary": summary}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def manager(tmp_path) -> Iterator[ServeManager]:
    band = free_band(200, set(), start=23000)
    settings = Settings.load(data_dir=tmp_path / "data", poll_interval=0.05, stop_timeout=1.0,
                             instance_port_range=free_range(100), ray_port_range=f"{band}-{band + 199}",
                             worker_ip=LEADER_IP, distributed_join_timeout=30.0)
    probe = FakeProbe()
    mgr = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe).start(watch=False)
    yield mgr
    mgr.close()


def leader(manager: ServeManager) -> tuple[str, Dashboard]:
    record, _ = manager.create_from_spec(spec("lead", leader=True, model=Model(gpus=False)))
    join = record.endpoints.ray_join.to_json()
    address = urlsplit(join["dashboard"])
    server = Dashboard((address.hostname, address.port), _Handler)
    server.alive = set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return record.id, server


@pytest.fixture
def lead(manager: ServeManager) -> Iterator[tuple[str, Dashboard]]:
    instance_id, server = leader(manager)
    yield instance_id, server
    server.shutdown()
    server.server_close()


def test_the_plan_names_the_head_and_followers(manager, lead):
    join = manager.get(lead[0]).endpoints.ray_join.to_json()
    assert join["leader_ip"] == LEADER_IP and join["followers"] == {FOLLOWER_IP: "worker 2"}
    assert join["head"].startswith(f"{LEADER_IP}:") and join["dashboard"].startswith(f"http://{LEADER_IP}:")


def test_waiting_reason_names_the_missing_follower(manager, lead):
    instance_id, server = lead
    server.alive = {LEADER_IP}
    manager._watch.run_once()
    record = manager.get(instance_id)
    assert record.state is InstanceState.STARTING
    assert record.reason.startswith("waiting for followers: ")
    assert f"follower {FOLLOWER_IP} (worker 2)" in record.reason and f"leader {LEADER_IP}" not in record.reason


def test_all_joined_then_the_http_probe_decides(manager, lead):
    instance_id, server = lead
    server.alive = {LEADER_IP, FOLLOWER_IP}
    manager._watch.run_once()
    record = manager.get(instance_id)
    assert record.state is InstanceState.STARTING and "not ready (fake probe)" in record.reason
    manager._context.probe.ready.add(record.endpoints.base_url)
    manager._watch.run_once()
    assert manager.get(instance_id).state is InstanceState.RUNNING


def test_timeout_fails_naming_the_missing_node(manager, lead):
    instance_id, server = lead
    server.alive = {LEADER_IP}
    manager._context.registry.update(instance_id, started_at=manager.get(instance_id).started_at - 31)
    manager._watch.run_once()
    record = manager.get(instance_id)
    head = record.endpoints.ray_join.head
    assert record.state is InstanceState.FAILED
    assert record.reason == f"follower {FOLLOWER_IP} (worker 2) has not joined the Ray head at {head} after 30 s"


def test_a_silent_dashboard_is_named_and_counts_as_nobody_joined(manager, lead):
    instance_id, server = lead
    server.shutdown()
    server.server_close()
    manager._watch.run_once()
    reason = manager.get(instance_id).reason
    assert f"leader {LEADER_IP}" in reason and FOLLOWER_IP in reason and "does not answer" in reason


def test_summary_parsing_keeps_only_alive_nodes():
    body = {"data": {"summary": [{"raylet": {"nodeManagerAddress": "10.0.0.1", "state": "ALIVE"}},
                                 {"raylet": {"nodeManagerAddress": "10.0.0.2", "state": "DEAD"}}, "junk"]}}
    assert joined_nodes(body) == {"10.0.0.1"}
    assert joined_nodes({"data": None}) == set() and joined_nodes([]) == set()
    join = RayJoin(head="10.0.0.1:6379", dashboard="http://10.0.0.1:8265", leader_ip="10.0.0.1",
                   followers={"10.0.0.2": "worker 8"})
    assert missing_nodes(join, {"10.0.0.1"}) == ["follower 10.0.0.2 (worker 8)"]

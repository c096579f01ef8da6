"""Real Ray clusters from berth's plans, run by the process deployer: two worker identities.

The leader worker (127.0.0.2) and the follower worker (127.0.0.3) are two identities on this
machine, each with its own run directory and Ray band; the plans and checks are shared with the
container deployer's test (``tests/support/ray_cluster.py`` says what is real and what stands in).
Here each side is a :class:`ProcessDeployer` over its own run directory, and a side's processes
are those carrying the deployer's per-container tag in their environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.backends.plan import ServePlan
from berth.deployers._stdlib import proc
from berth.deployers.process._state import TAG_ENV, process_tag
from berth.deployers.base import Deployer, InvalidWorkload
from berth.deployers.process import ProcessDeployer
from tests.support.ray_cluster import (
    FOLLOWER_IP, LEADER_IP, Model, Pair, Workers, check_serving, check_sockets,
    clusters, delete_all, make_instance, planned_ports, worker_settings,
)

pytestmark = pytest.mark.ray

MODEL = Model()  # the seed's shape: one NVIDIA GPU per node (the process deployer needs none)


def tagged(deployer: Deployer, plan: ServePlan) -> set[int]:
    """Live processes started by ``deployer`` for ``plan``, found by the tag in their env."""
    assert isinstance(deployer, ProcessDeployer)
    found: set[int] = set()
    for container in plan.workload.containers:
        tag = process_tag(os.path.join(deployer.run_dir, plan.name), container.name)
        found |= proc.members(tag=(TAG_ENV, tag))
    return found


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    workers = Pair(ProcessDeployer(tmp_path / "leader"), ProcessDeployer(tmp_path / "follower"), tagged)
    yield workers
    delete_all(tmp_path, workers.follower, workers.leader)


def test_two_workers_form_one_ray_cluster_from_their_plans(pair: Pair) -> None:
    instance = make_instance("dist-1", set(), MODEL)
    with clusters(pair, instance):
        check_serving(pair, instance)


def test_two_instances_at_once_get_disjoint_bands(pair: Pair, tmp_path: Path) -> None:
    taken: set[int] = set()
    workers = Workers(
        worker_settings(tmp_path, LEADER_IP, 1, taken), worker_settings(tmp_path, FOLLOWER_IP, 2, taken), MODEL
    )
    first, second = workers.admit("dist-a"), workers.admit("dist-b")
    assert planned_ports(first.leader).isdisjoint(planned_ports(second.leader))
    assert planned_ports(first.follower).isdisjoint(planned_ports(second.follower))
    with clusters(pair, first, second):
        a_leader, a_follower = check_sockets(pair, first)
        b_leader, b_follower = check_sockets(pair, second)
        assert not a_leader & b_leader and not a_follower & b_follower
        clash = make_instance("dist-c", set(), MODEL)
        clash.leader.workload.containers[1].ports = first.leader.workload.containers[1].ports
        with pytest.raises(InvalidWorkload, match=r"port \d+/tcp declared by container 'ray-head'"):
            pair.leader.create(clash.leader.workload)

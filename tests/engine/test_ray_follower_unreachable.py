"""A follower whose Ray head cannot be reached fails, naming the address it tried (``-m ray``).

The follower's plan comes from ``VLLMServer.from_spec(...).plan()`` as in
``tests/support/ray_cluster.py``; its leader (127.0.0.2) has nothing listening on the head port.
The process deployer runs the plan's ``ray start --address=...`` for real, with Ray's GCS
connection wait shortened so the test is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.backends import VLLMServer
from berth.deployers.base import RUN_CONTAINER
from berth.deployers.process import ProcessDeployer
from berth.schemas.workload import WorkloadState
from tests.support.ray_cluster import LEADER_IP, Model, delete_all, free_band, spec

pytestmark = pytest.mark.ray

GIVE_UP = 180.0  # seconds the test waits for ``ray start`` to give up (about 20 s here)
#: Ray's own knobs for how long a joining node waits for the GCS, shortened here: one connection
#: attempt (``RAY_gcs_server_port_wait_time_s``, read by ``ray._private.node``) of 5 s RPC waits.
SHORT_WAIT = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_gcs_rpc_server_connect_timeout_s": "5",
              "RAY_gcs_rpc_server_reconnect_timeout_s": "5"}


@pytest.fixture
def deployer(tmp_path: Path) -> Iterator[ProcessDeployer]:
    deployer = ProcessDeployer(tmp_path / "follower")
    yield deployer
    delete_all(tmp_path, deployer)


def test_a_follower_that_cannot_reach_the_head_fails_naming_it(deployer: ProcessDeployer) -> None:
    taken: set[int] = set()
    band, dead = free_band(100, taken, start=24000), free_band(4, taken, start=24500)
    config = {"ray_port_range": f"{band}-{band + 99}", "ray_head_port": dead}
    plan = VLLMServer.from_spec(spec("lonely", leader=False, model=Model(), ports=[dead + 1, dead + 2, dead + 3], config=config)).plan()
    run = plan.workload.containers[0]
    assert run.name == RUN_CONTAINER and run.execution is not None
    head = f"{LEADER_IP}:{dead}"
    assert f"--address={head}" in (run.execution.args or []), run.execution.args
    run.envs = [*(run.envs or []), *(type(run.envs[0])(name=k, value=v) for k, v in SHORT_WAIT.items())]
    deployer.create(plan.workload)
    status = deployer.get(plan.name)
    deadline = time.monotonic() + GIVE_UP
    while not status.state.terminal and time.monotonic() < deadline:
        time.sleep(1.0)
        status = deployer.get(plan.name)
    tail = deployer.logs(plan.name, container=RUN_CONTAINER).data.decode(errors="replace")
    assert status.state is WorkloadState.FAILED, f"still {status.state} after {GIVE_UP:.0f} s; log tail:\n{tail[-2000:]}"
    assert head in tail or head in (status.reason or ""), f"neither the reason {status.reason!r} nor the log names {head}:\n{tail[-2000:]}"

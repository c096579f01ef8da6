"""vLLM's own multi-node mode (mp), as GPUStack 2.3 plans it: dp-only, mp-only and nested
layouts, headless followers, the ports read by role, and refusals for layouts that cannot work."""

import pytest

from berth.backends import PlanError
from berth.backends.vllm_topology import UserParallelism, multinode_topology
from tests.support.specs import DEFAULT_ENV as LOADING
from tests.support.specs import distributed, make_plan

MP = ["--distributed-executor-backend", "mp"]
NIC = {"NCCL_SOCKET_IFNAME": "=eth0", "GLOO_SOCKET_IFNAME": "eth0"}


def mp(*extra: str) -> dict:
    return {"backend_version": "0.11.0", "backend_parameters": [*MP, *extra]}


def nodes(counts: list[int], rank: int, params: list[str], ports=(40000, 40001, 40002)):
    """A distributed instance over workers holding ``counts`` GPUs, seen from node ``rank``."""
    followers = [
        {"worker_id": i + 2, "worker_ip": f"10.0.0.{i + 2}", "gpu_indexes": list(range(n))}
        for i, n in enumerate(counts[1:])
    ]
    return make_plan(
        model={"backend_version": "0.11.0", "backend_parameters": params},
        instance={
            "gpu_indexes": list(range(counts[0])),
            "ports": list(ports),
            "distributed_servers": {"subordinate_workers": followers},
        },
        worker={"id": rank + 1, "ip": f"10.0.0.{rank + 1}"},
    )


def test_dp_only_leader_serves_every_rank_on_its_node():
    plan = distributed(model=mp())
    assert plan.args == [
        "/models/org/m",
        "--tensor-parallel-size", "2", "--data-parallel-size", "2", "--data-parallel-size-local", "1",
        "--enable-prompt-tokens-details",
        "--data-parallel-address", "10.0.0.1", "--data-parallel-rpc-port", "40001",
        *MP,
        "--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m",
    ]
    assert plan.env == {**LOADING, "VLLM_HOST_IP": "10.0.0.1", "VLLM_DP_MASTER_PORT": "40002", **NIC}
    assert [c.name for c in plan.workload.containers] == ["default"]
    assert plan.ports.ray is None and plan.ports.master == 40002
    assert plan.readiness_url == "http://10.0.0.1:40000/health"
    assert plan.served_names == ["m"]


def test_dp_only_follower_starts_at_its_rank_headless():
    plan = distributed(leader=False, model=mp())
    assert plan.name == "m-1-f0"
    assert plan.command == ["vllm", "serve"]
    assert plan.args == [
        "/models/org/m",
        "--tensor-parallel-size", "2", "--data-parallel-size", "2", "--data-parallel-size-local", "1",
        "--enable-prompt-tokens-details",
        "--data-parallel-start-rank", "1",
        "--data-parallel-address", "10.0.0.1", "--data-parallel-rpc-port", "40001",
        "--headless",
        *MP,
        "--host", "10.0.0.2", "--port", "40000", "--served-model-name", "m",
    ]
    assert plan.readiness_url is None and plan.served_names == []


def test_dp_only_on_uneven_nodes_counts_ranks_per_node():
    plan = nodes([4, 2, 2], 2, MP)
    args = plan.args
    assert args[1:7] == ["--tensor-parallel-size", "2", "--data-parallel-size", "4", "--data-parallel-size-local", "1"]
    assert args[args.index("--data-parallel-start-rank") + 1] == "3"


def test_dp_only_with_a_fourth_port_sets_vllm_port():
    plan = nodes([2, 2], 1, MP, ports=(40000, 40001, 40002, 40003, 40004))
    assert plan.env["VLLM_DP_MASTER_PORT"] == "40004"
    assert plan.env["VLLM_PORT"] == "40003"


def test_mp_only_spans_nodes_with_rank_and_master():
    plan = nodes([2, 2], 1, [*MP, "--tp", "4"])
    assert plan.args == [
        "/models/org/m", "--enable-prompt-tokens-details",
        "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "40002",
        "--headless", *MP, "--tp", "4",
        "--host", "10.0.0.2", "--port", "40000", "--served-model-name", "m",
    ]
    assert plan.env == {**LOADING, "VLLM_HOST_IP": "10.0.0.2", **NIC}  # no DP master: dp is 1


def test_nested_has_both_sets_and_derives_the_rank_from_the_node():
    plan = nodes([2, 2, 2, 2], 2, [*MP, "--tensor-parallel-size=4"])
    args = plan.args
    assert args[1:5] == ["--data-parallel-size", "2", "--data-parallel-size-local", "1"]
    assert args[args.index("--node-rank") + 1] == "2"
    assert args[args.index("--data-parallel-address") + 1] == "10.0.0.1"
    assert "--data-parallel-start-rank" not in args and "--headless" in args
    assert plan.env["VLLM_DP_MASTER_PORT"] == "40002" and "VLLM_PORT" not in plan.env


def test_a_model_image_defaults_to_mp_and_says_so():
    plan = make_plan(
        model={"image_name": "my/vllm:1"},
        instance={
            "gpu_indexes": [0, 1], "ports": [40000, 40001, 40002],
            "distributed_servers": {"subordinate_workers": [{"worker_id": 2, "gpu_indexes": [0, 1]}]},
        },
    )
    assert plan.args[plan.args.index("--distributed-executor-backend") + 1] == "mp"
    assert plan.ports.ray is None


def test_custom_vllm_from_0_18_defaults_to_mp_older_to_ray():
    def executor(version: str) -> str:
        plan = distributed(model={"backend_version": version})
        return plan.args[plan.args.index("--distributed-executor-backend") + 1]

    assert executor("0.19.0-custom") == "mp"
    assert executor("0.17.1-custom") == "ray"
    assert executor("0.19.0") == "ray"


def test_hybrid_load_balancing_followers_serve_their_own_api():
    plan = distributed(leader=False, model=mp("--data-parallel-hybrid-lb"))
    assert "--headless" not in plan.args


@pytest.mark.parametrize(
    ("counts", "params", "message"),
    [
        ([4, 2], ["--tp", "4", "--pp", "2"], "needs equal nodes"),
        ([2, 2], ["--tp", "1", "--dp", "3"], "does not match"),
        ([2, 2], ["--pp", "0"], "must be positive"),
        ([2, 2], ["--tp", "4", "--dp", "2"], "does not match"),
        ([3, 3], ["--dp", "4"], "cannot derive --tensor-parallel-size"),
        ([2, 2], ["--tp", "4", "--dpl", "2"], "must be 1"),
    ],
)
def test_layouts_that_cannot_work_are_refused(counts, params, message):
    with pytest.raises(PlanError, match=message):
        nodes(counts, 0, [*MP, *params])


def test_mp_needs_the_master_port():
    with pytest.raises(PlanError, match="at least 3 ports"):
        nodes([2, 2], 0, MP, ports=(40000, 40001))


def test_topology_shapes():
    none = UserParallelism()
    assert multinode_topology([8, 8], 1, none).shape == "dp_only"
    spanning = multinode_topology([2, 2, 2, 2], 3, UserParallelism(tp=4))
    assert (spanning.shape, spanning.dp, spanning.start_rank, spanning.follower) == ("nested", 2, 1, True)
    assert multinode_topology([4, 4], 0, UserParallelism(tp=8)).shape == "mp_only"
    assert multinode_topology([4, 4], 0, UserParallelism(dp=4)).tp == 2

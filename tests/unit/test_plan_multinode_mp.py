"""vLLM's own multi-node mode (``--distributed-executor-backend mp``): headless followers, no Ray."""

from tests.support.specs import distributed

MP = {"backend_version": "0.11.0", "backend_parameters": ["--distributed-executor-backend", "mp"]}


def test_leader_serves_and_names_the_master():
    plan = distributed(model=MP)
    assert plan.args == [
        "/models/org/m", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
        "--enable-prompt-tokens-details",
        "--nnodes", "2", "--node-rank", "0", "--master-addr", "10.0.0.1", "--master-port", "40002",
        "--distributed-executor-backend", "mp",
        "--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m",
    ]
    assert [c.name for c in plan.workload.containers] == ["default"]
    assert plan.ports.ray is None
    assert plan.readiness_url == "http://10.0.0.1:40000/health"


def test_follower_is_headless_with_its_rank():
    plan = distributed(leader=False, model=MP)
    [run] = plan.workload.containers
    assert run.execution.command == ["vllm", "serve"]
    args = run.execution.args
    assert args[args.index("--node-rank") + 1] == "1"
    assert args[args.index("--master-addr") + 1] == "10.0.0.1"
    assert "--headless" in plan.injected
    assert plan.readiness_url is None and plan.name == "m-1-w2"


def test_env_has_no_ray_port_settings():
    plan = distributed(model=MP)
    assert plan.env["VLLM_HOST_IP"] == "10.0.0.1"
    assert "VLLM_PORT" not in plan.env and "RAY_LOG_TO_STDERR" not in plan.env
    assert plan.env["NCCL_SOCKET_IFNAME"] == "=eth0"


def test_data_parallel_address_and_rpc_port():
    model = dict(MP, backend_parameters=["--distributed-executor-backend=mp", "--dp", "4"])
    plan = distributed(model=model)
    args = plan.args
    assert args[args.index("--data-parallel-address") + 1] == "10.0.0.1"
    assert args[args.index("--data-parallel-rpc-port") + 1] == "40001"

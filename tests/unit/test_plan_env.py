"""VLLMServer's environment rules."""

from tests.support.specs import DEFAULT_ENV as DEFAULTS
from tests.support.specs import distributed, make_plan

ASCEND = [{"index": i, "vendor": "ascend", "arch_family": "Ascend910B3"} for i in range(2)]
ASCEND_310P = [{"index": i, "vendor": "ascend", "arch_family": "Ascend310P3"} for i in range(2)]


def test_defaults_in_order():
    plan = make_plan()
    assert list(plan.env.items()) == list(DEFAULTS.items())


def test_user_values_never_overridden_and_moved_after():
    plan = make_plan(model={"env": {"OMP_NUM_THREADS": "8", "MY_VAR": "x"}})
    assert list(plan.env.items()) == [
        ("MY_VAR", "x"),
        ("OMP_NUM_THREADS", "8"),
        *[(k, v) for k, v in DEFAULTS.items() if k != "OMP_NUM_THREADS"],
    ]


def test_cache_root_under_cache_dir(tmp_path):
    plan = make_plan(config={"cache_dir": str(tmp_path)})
    assert plan.env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm")
    assert (tmp_path / "vllm").is_dir()
    user = make_plan(config={"cache_dir": str(tmp_path)}, model={"env": {"VLLM_CACHE_ROOT": "/mine"}})
    assert user.env["VLLM_CACHE_ROOT"] == "/mine"
    assert "VLLM_CACHE_ROOT" not in make_plan().env


def test_lmcache_ram_size_and_chunk():
    plan = make_plan(model={"extended_kv_cache": {"enabled": True, "chunk_size": 256, "ram_size": 64}})
    assert plan.env["LMCACHE_CHUNK_SIZE"] == "256"
    assert plan.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "64"


def test_lmcache_ram_ratio_of_vram_claim():
    claim = {"vram": {0: 40 << 30, 1: 40 << 30}}
    plan = make_plan(
        model={"extended_kv_cache": {"enabled": True, "ram_ratio": 0.5}},
        instance={"gpu_indexes": [0, 1], "computed_resource_claim": claim},
    )
    assert plan.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "40"
    assert "LMCACHE_CHUNK_SIZE" not in plan.env


def test_lmcache_follower_uses_its_own_claim():
    plan = distributed(
        leader=False,
        model={"extended_kv_cache": {"enabled": True, "ram_ratio": 1.0}},
        instance={
            "computed_resource_claim": {"vram": {0: 80 << 30}},
            "distributed_servers": {"subordinate_workers": [{
                "worker_id": 2, "worker_ip": "10.0.0.2", "gpu_indexes": [0, 1],
                "computed_resource_claim": {"vram": {0: 8 << 30, 1: 8 << 30}},
            }]},
        },
    )
    assert plan.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "16"


def test_lmcache_disabled():
    assert "LMCACHE_MAX_LOCAL_CPU_SIZE" not in make_plan(model={"extended_kv_cache": {"enabled": False}}).env


def test_distributed_env_nvidia():
    plan = distributed()
    assert list(plan.env.items())[len(DEFAULTS):] == [
        ("VLLM_HOST_IP", "10.0.0.1"),
        ("VLLM_PORT", "40002"),
        ("RAY_LOG_TO_STDERR", "0"),
        ("RAY_BACKEND_LOG_LEVEL", "warning"),
        ("NCCL_SOCKET_IFNAME", "=eth0"),
        ("GLOO_SOCKET_IFNAME", "eth0"),
    ]


def test_distributed_env_user_nic_kept():
    plan = distributed(model={"env": {"NCCL_SOCKET_IFNAME": "ib0", "RAY_LOG_TO_STDERR": "1"}})
    assert plan.env["NCCL_SOCKET_IFNAME"] == "ib0"
    assert "GLOO_SOCKET_IFNAME" not in plan.env
    assert plan.env["RAY_LOG_TO_STDERR"] == "1"


def test_distributed_env_follower_uses_own_ip():
    plan = distributed(leader=False)
    assert plan.env["VLLM_HOST_IP"] == "10.0.0.2"
    assert plan.role == "follower"


def test_ascend_env_single():
    plan = make_plan(worker={"gpu_devices": ASCEND})
    assert list(plan.env.items())[len(DEFAULTS):] == [
        ("TASK_QUEUE_ENABLE", "1"),
        ("CPU_AFFINITY_CONF", "1"),
        ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True"),
        ("HCCL_CONNECT_TIMEOUT", "7200"),
        ("HCCL_RDMA_PCIE_DIRECT_POST_NOSTRICT", "TRUE"),
        ("HCCL_EXEC_TIMEOUT", "0"),
        ("HCCL_OP_EXPANSION_MODE", "AIV"),
    ]


def test_ascend_310p_keeps_hccl_exec_defaults_off():
    plan = make_plan(worker={"gpu_devices": ASCEND_310P})
    assert "HCCL_EXEC_TIMEOUT" not in plan.env and "HCCL_OP_EXPANSION_MODE" not in plan.env
    assert plan.env["TASK_QUEUE_ENABLE"] == "1"


def test_ascend_distributed_hccl():
    plan = distributed(worker={"gpu_devices": ASCEND, "ifname": "enp1"})
    items = list(plan.env.items())
    start = [k for k, _ in items].index("VLLM_HOST_IP")
    assert items[start:start + 8] == [
        ("VLLM_HOST_IP", "10.0.0.1"),
        ("VLLM_PORT", "40002"),
        ("RAY_LOG_TO_STDERR", "0"),
        ("RAY_BACKEND_LOG_LEVEL", "warning"),
        ("HCCL_IF_IP", "10.0.0.1"),
        ("HCCL_SOCKET_IFNAME", "=enp1"),
        ("GLOO_SOCKET_IFNAME", "enp1"),
        ("TP_SOCKET_IFNAME", "enp1"),
    ]
    assert "NCCL_SOCKET_IFNAME" not in plan.env


def test_cpu_worker_is_not_ascend():
    plan = make_plan(instance={"gpu_indexes": []}, worker={"gpu_devices": []}, model={"image_name": "local/vllm-cpu"})
    assert "TASK_QUEUE_ENABLE" not in plan.env

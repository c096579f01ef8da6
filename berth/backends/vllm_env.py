"""vLLM's environment rules: defaults that never override the user's, cache, LMCache,
distributed networking and Ascend tuning. Each rule edits the env dict in place, in the order
the plan applies them (a default is re-inserted at the end, as GPUStack's env does)."""

from __future__ import annotations

import os
from typing import NamedTuple

from berth.schemas import ExtendedKVCacheConfig, Worker
from berth.utils.units import byte_to_gib

__all__ = [
    "DistributedEnvPorts",
    "set_ascend_env",
    "set_cache_env",
    "set_default",
    "set_distributed_env",
    "set_lmcache_env",
    "set_loading_defaults",
]


class DistributedEnvPorts(NamedTuple):
    """Ports a distributed node reads from its env (None: not set)."""

    ray_init: int | None = None
    dp_master: int | None = None
    vllm_base: int | None = None


def set_default(env: dict[str, str], name: str, value: str) -> None:
    """Keep the user's value if any, else ``value``; the key moves to the end either way."""
    env[name] = env.pop(name, value)


def set_loading_defaults(env: dict[str, str]) -> None:
    """Threads, safetensors and Run:ai streamer defaults for fast, observable loading."""
    set_default(env, "OMP_NUM_THREADS", "1")
    set_default(env, "SAFETENSORS_FAST_GPU", "1")
    set_default(env, "RUNAI_STREAMER_MEMORY_LIMIT", "0")
    set_default(env, "RUNAI_STREAMER_LOG_TO_STDERR", "1")
    set_default(env, "RUNAI_STREAMER_LOG_LEVEL", "INFO")


def set_cache_env(env: dict[str, str], cache_dir: str | None) -> str | None:
    """Persist vLLM's compile cache under ``<cache_dir>/vllm`` (created if missing); returns a
    warning when it cannot be created."""
    if "VLLM_CACHE_ROOT" in env or not cache_dir:
        return None
    path = os.path.join(cache_dir, "vllm")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"cannot create vLLM cache dir {path} ({exc}); compile cache not persisted"
    env["VLLM_CACHE_ROOT"] = path
    return None


def set_lmcache_env(env: dict[str, str], kv: ExtendedKVCacheConfig, ram_bytes: int | None) -> None:
    """LMCache's chunk size and host-RAM budget in GiB (a whole number printed without ``.0``);
    no budget when there is none to give."""
    if kv.chunk_size and kv.chunk_size > 0:
        env["LMCACHE_CHUNK_SIZE"] = str(kv.chunk_size)
    if ram_bytes:
        gib = byte_to_gib(ram_bytes)
        env["LMCACHE_MAX_LOCAL_CPU_SIZE"] = str(int(gib) if gib.is_integer() else gib)


def set_distributed_env(env: dict[str, str], worker: Worker, ports: DistributedEnvPorts, ascend: bool) -> None:
    """This node's address, the NIC for collectives, and the ports vLLM reads from the env:
    under Ray the distributed-init port (``VLLM_PORT``) and Ray's log defaults; under vLLM's
    mp multi-node mode the data-parallel master (``VLLM_DP_MASTER_PORT``) and, data parallel
    only, the base of vLLM's own ports (``VLLM_PORT``)."""
    env["VLLM_HOST_IP"] = worker.ip
    if ports.ray_init is not None:
        env["VLLM_PORT"] = str(ports.ray_init)
        set_default(env, "RAY_LOG_TO_STDERR", "0")
        set_default(env, "RAY_BACKEND_LOG_LEVEL", "warning")
    if ports.dp_master is not None:
        env["VLLM_DP_MASTER_PORT"] = str(ports.dp_master)
    if ports.vllm_base is not None:
        env["VLLM_PORT"] = str(ports.vllm_base)
    if ascend:
        if "HCCL_SOCKET_IFNAME" not in env:
            env["HCCL_IF_IP"] = worker.ip
            env["HCCL_SOCKET_IFNAME"] = f"={worker.ifname}"
            env["GLOO_SOCKET_IFNAME"] = worker.ifname
            env["TP_SOCKET_IFNAME"] = worker.ifname
        return
    if "NCCL_SOCKET_IFNAME" not in env:
        env["NCCL_SOCKET_IFNAME"] = f"={worker.ifname}"
        env["GLOO_SOCKET_IFNAME"] = worker.ifname


def set_ascend_env(env: dict[str, str], is_310p: bool) -> None:
    """Ascend tuning; 310P keeps HCCL's execution timeout and expansion mode as they are."""
    set_default(env, "TASK_QUEUE_ENABLE", "1")
    set_default(env, "CPU_AFFINITY_CONF", "1")
    set_default(env, "PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True")
    set_default(env, "HCCL_CONNECT_TIMEOUT", "7200")
    set_default(env, "HCCL_RDMA_PCIE_DIRECT_POST_NOSTRICT", "TRUE")
    if not is_310p:
        set_default(env, "HCCL_EXEC_TIMEOUT", "0")
        set_default(env, "HCCL_OP_EXPANSION_MODE", "AIV")

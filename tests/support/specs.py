"""Building deployment specs for tests, with only the fields a test cares about."""

from __future__ import annotations

import copy
from typing import Any

from berth.backends import VLLMServer
from berth.backends.plan import ServePlan
from berth.schemas import DeploymentSpec

BASE: dict[str, Any] = {
    "model": {"name": "m", "backend_version": "0.11.0"},
    "instance": {
        "name": "m-1",
        "model_name": "m",
        "worker_id": 1,
        "worker_ip": "10.0.0.1",
        "gpu_indexes": [0],
        "ports": [40000],
    },
    "worker": {
        "id": 1,
        "ip": "10.0.0.1",
        "ifname": "eth0",
        "gpu_devices": [{"index": i, "vendor": "nvidia"} for i in range(8)],
    },
    "model_path": "/models/org/m",
}

#: The environment every plan starts with, in this order (the model-loading defaults GPUStack 2.3 sets).
DEFAULT_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "SAFETENSORS_FAST_GPU": "1",
    "RUNAI_STREAMER_MEMORY_LIMIT": "0",
    "RUNAI_STREAMER_LOG_TO_STDERR": "1",
    "RUNAI_STREAMER_LOG_LEVEL": "INFO",
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in: nested dicts key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def make_spec(**sections: Any) -> DeploymentSpec:
    """``make_spec(model={...}, instance={...})`` deep-merges over a single-GPU NVIDIA spec."""
    return DeploymentSpec.model_validate(deep_merge(BASE, sections))


def make_plan(**sections: Any) -> ServePlan:
    return VLLMServer.from_spec(make_spec(**sections)).plan()


def distributed(leader: bool = True, follower_gpus: list[int] | None = None, **over: Any) -> ServePlan:
    """A two-worker instance seen from the leader (worker 1) or the follower (worker 2)."""
    instance = {
        "gpu_indexes": [0, 1],
        "ports": [40000, 40001, 40002],
        "distributed_servers": {
            "subordinate_workers": [
                {"worker_id": 2, "worker_ip": "10.0.0.2", "gpu_indexes": follower_gpus or [0, 1]}
            ]
        },
    }
    worker = {} if leader else {"id": 2, "ip": "10.0.0.2"}
    sections = deep_merge({"instance": instance, "worker": worker}, over)
    return make_plan(**sections)


def local_spec(name: str, ports: list[int] | None = None) -> DeploymentSpec:
    """A spec for this worker (127.0.0.1, no GPU) named ``name``, with the scheduler's ``ports`` if given."""
    instance: dict[str, Any] = {"name": name, "model_name": name, "worker_id": 1, "worker_ip": "127.0.0.1"}
    if ports:
        instance["ports"] = ports
    return DeploymentSpec.model_validate({
        "model": {"name": name, "image_name": "local/vllm"}, "instance": instance,
        "worker": {"id": 1, "ip": "127.0.0.1"}, "model_path": "/models/tiny"})

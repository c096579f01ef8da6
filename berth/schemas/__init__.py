"""pydantic models: what berth is told (spec), and what deployers report (workload status)."""

from berth.schemas.config import BerthConfig
from berth.schemas.instances import (
    CacheConfigSnapshot,
    ComputedResourceClaim,
    DistributedServers,
    InstancePorts,
    ModelInstance,
    MountedLoRA,
    SubordinateWorker,
)
from berth.schemas.models import (
    ExtendedKVCacheConfig,
    GPUTypeSelector,
    Model,
    SpeculativeAlgorithm,
    SpeculativeConfig,
    is_audio_model,
    is_omni_model,
)
from berth.schemas.spec import DeploymentSpec
from berth.schemas.workers import GPUDevice, Worker
from berth.schemas.workload import ContainerStatus, LogChunk, WorkloadState, WorkloadStatus

__all__ = [
    "BerthConfig",
    "CacheConfigSnapshot",
    "ComputedResourceClaim",
    "ContainerStatus",
    "DeploymentSpec",
    "DistributedServers",
    "ExtendedKVCacheConfig",
    "GPUDevice",
    "GPUTypeSelector",
    "InstancePorts",
    "LogChunk",
    "Model",
    "ModelInstance",
    "MountedLoRA",
    "SpeculativeAlgorithm",
    "SpeculativeConfig",
    "SubordinateWorker",
    "Worker",
    "WorkloadState",
    "WorkloadStatus",
    "is_audio_model",
    "is_omni_model",
]

"""berth as a worker of a GPUStack 2.3 cluster: registration, heartbeat and status, the model
instances and model files GPUStack assigns here, and the endpoints its server calls on a worker.
See docs/gpustack.md."""

from __future__ import annotations

from berth.worker.gpustack._agent import GPUStackAgent, NotJoined
from berth.worker.gpustack._routes import GPUSTACK_PATHS, health_router, router
from berth.worker.gpustack._translate import (
    berth_id,
    gpustack_id,
    instance_from_header,
    to_spec,
)

__all__ = [
    "GPUSTACK_PATHS",
    "GPUStackAgent",
    "NotJoined",
    "berth_id",
    "gpustack_id",
    "health_router",
    "instance_from_header",
    "router",
    "to_spec",
]

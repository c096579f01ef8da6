"""The worker (node) an instance runs on, and its GPUs."""

from __future__ import annotations

from pydantic import Field, field_validator

from berth.schemas._base import GPUStackModel

__all__ = ["GPUDevice", "Worker"]


class GPUDevice(GPUStackModel):
    """One accelerator of the worker."""

    index: int = Field(ge=0, description="Device index on this worker.")
    uuid: str | None = Field(default=None, description="Device UUID, when known.")
    name: str | None = Field(default=None, description="Marketing name, e.g. 'NVIDIA H100'.")
    vendor: str = Field(description="nvidia, amd, ascend, hygon, mthreads, iluvatar, metax...")
    type: str | None = Field(default=None, description="Runtime type, e.g. cuda, rocm, cann.")
    arch_family: str | None = Field(default=None, description="e.g. Ascend310P3, Ascend910B.")
    memory_total: int | None = Field(default=None, description="VRAM in bytes.")
    runtime_version: str | None = Field(
        default=None, description="Host runtime version, e.g. the CUDA driver's '12.4'."
    )

    @field_validator("vendor")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class Worker(GPUStackModel):
    """The node berth runs on, as the scheduler knows it."""

    id: int | None = Field(default=None, description="Scheduler's worker id.")
    name: str | None = Field(default=None, description="Worker name.")
    ip: str = Field(min_length=1, description="Address engines bind to and peers reach.")
    ifname: str = Field(default="eth0", description="Network interface for NCCL/GLOO/HCCL.")
    gpu_devices: list[GPUDevice] = Field(
        default_factory=list, description="Accelerators instances may use; empty: a CPU worker."
    )

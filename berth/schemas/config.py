"""What planning needs to know about this worker's setup (the ``config`` part of a spec)."""

from __future__ import annotations

from pydantic import Field, field_validator

from berth.schemas._base import StrictModel, port_field
from berth.utils.ports import parse_port_range

__all__ = ["DEFAULT_IMAGES", "DEFAULT_RAY_PORT_RANGE", "BerthConfig"]

#: Image per vendor; ``{tag}`` becomes ``v<backend_version>`` or ``latest``.
DEFAULT_IMAGES: dict[str, str] = {
    "nvidia": "vllm/vllm-openai:{tag}",
    "amd": "rocm/vllm:{tag}",
    "ascend": "quay.io/ascend/vllm-ascend:{tag}",
}
DEFAULT_RAY_PORT_RANGE = "41000-41999"
DEFAULT_SHM_SIZE_GIB = 10.0


class BerthConfig(StrictModel):
    """Worker-side settings that shape a plan."""

    cache_dir: str | None = Field(
        default=None, description="Cache root; vLLM's compile cache goes to <cache_dir>/vllm."
    )
    data_dir: str | None = Field(default=None, description="Worker state (registry, logs).")
    ray_port_range: str = Field(
        default=DEFAULT_RAY_PORT_RANGE,
        description="Ports for one Ray node: GCS, dashboard, agents, metrics, node and object "
        "managers, runtime-env agent, then the worker port range (at least 12 ports).",
    )
    ray_head_port: int | None = port_field(
        "Follower only: the leader's Ray GCS port, when the leader's Ray range "
        "starts elsewhere than this worker's (default: this worker's range start)."
    )
    images: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_IMAGES),
        description="Image per GPU vendor (nvidia, amd, ascend, ... or 'cpu' for none); "
        "'{tag}' becomes 'v<backend_version>' or 'latest', '{version}' the bare version.",
    )
    entrypoint: list[str] = Field(
        default_factory=lambda: ["vllm", "serve"], min_length=1,
        description="Command that starts vLLM's API server in the image.",
    )
    runtime_uid: int | None = Field(default=None, ge=0, description="Run containers as this user.")
    runtime_gid: int | None = Field(default=None, ge=0, description="Run containers as this group.")
    cuda_minor_version_compatibility: bool = Field(
        default=False,
        description="Run CUDA images built for a newer CUDA minor than the host driver on the "
        "host driver (NVIDIA_DISABLE_REQUIRE=1 and the image's cuda-compat removed at start). "
        "A model's env GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY overrides it.",
    )
    host_ipc: bool | None = Field(
        default=None,
        description="Join the host IPC namespace: unset means only when a shared KV cache is "
        "attached. A model's env GPUSTACK_HOST_IPC overrides it.",
    )
    shm_size_gib: float = Field(
        default=DEFAULT_SHM_SIZE_GIB, gt=0, description="Shared memory size of the workload in GiB."
    )

    @field_validator("ray_port_range")
    @classmethod
    def _ray_range(cls, value: str) -> str:
        start, end = parse_port_range(value)
        if end - start + 1 < 12:
            raise ValueError(f"{value!r} holds {end - start + 1} ports; a Ray node needs at least 12")
        return value

    @field_validator("shm_size_gib", mode="before")
    @classmethod
    def _shm_fallback(cls, value: object) -> object:
        """An unusable shm size falls back to the default, as GPUStack's setting does."""
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return DEFAULT_SHM_SIZE_GIB
        return number if number > 0 else DEFAULT_SHM_SIZE_GIB

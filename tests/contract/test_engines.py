"""The contract cases against the container deployer on each engine, in a pytest of its own.

gpustack-runtime reads its engine settings once per process, so each engine gets a process
whose environment selects it (:mod:`tests.support.engines`); there ``test_contract.py`` runs its
cases against ``container`` only (see ``conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.conftest import ENGINE_ENV
from tests.support.engines import docker_env, podman_env

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("test_contract.py")
TIMEOUT = 600


def _run_cases(engine: str, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)]
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env, ENGINE_ENV: engine},
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    summary = done.stdout.strip().splitlines()[-1:] or [""]
    assert done.returncode == 0, f"the contract cases failed on {engine}:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert "passed" in summary[0] and "skipped" not in summary[0], summary[0]


@pytest.mark.docker
def test_container_deployer_on_docker() -> None:
    _run_cases("docker", docker_env())


@pytest.mark.podman
def test_container_deployer_on_podman() -> None:
    _run_cases("podman", podman_env())

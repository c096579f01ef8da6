"""Shared pieces of the hardening suites: an in-process worker over the memory deployer, the
fast vLLM stand-in, and a spec body for the spec API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from berth.deployers.base import Deployer
from berth.deployers.memory import MemoryDeployer
from berth.worker import ServeManager, Settings, create_app
from berth.testing.fakes import FakeProbe
from tests.support.ports import free_range
from tests.support.serve_process import FAKE_VLLM

__all__ = ["FAKE_ENTRYPOINT", "in_process", "spec_body"]

FAKE_ENTRYPOINT = [sys.executable, FAKE_VLLM]


@contextmanager
def in_process(data_dir: Path, deployer: Deployer | None = None, **settings: Any) -> Iterator[TestClient]:
    """The worker's app over ``deployer`` (memory by default), started and closed around the block."""
    base = {"data_dir": data_dir, "poll_interval": 0.05, "instance_port_range": free_range(100)}
    manager = ServeManager(Settings.load(**{**base, **settings}), deployer=deployer or MemoryDeployer(),
                           probe=FakeProbe())
    with TestClient(create_app(manager)) as client:
        yield client


def spec_body(name: str = "s-1", **model: Any) -> dict[str, Any]:
    """A minimal deployment spec for ``POST /v2/instances`` (CPU worker, no GPU)."""
    return {
        "model": {"name": "m", "backend_version": "0.11.0", **model},
        "instance": {"name": name, "model_name": "m"},
        "worker": {"ip": "127.0.0.1", "ifname": "lo"},
        "model_path": "/models/m",
    }

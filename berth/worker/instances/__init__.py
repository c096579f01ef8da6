"""``ServeManager``: this node's instances for their whole life, through public methods only."""

from __future__ import annotations

from berth.worker.instances._deployer_factory import describe_deployer, open_deployer
from berth.worker.instances._manager import ServeManager

__all__ = [
    "ServeManager",
    "describe_deployer",
    "open_deployer",
]

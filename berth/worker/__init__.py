"""The worker: owns this node's instances (``ServeManager``), keeps them in a durable registry,
and serves the launcher-compatible and spec APIs (``create_app``), configured by ``Settings``."""

from __future__ import annotations

from berth.worker.admission import LauncherRequest
from berth.worker.app import create_app
from berth.worker.engine import Readiness, ReadinessProbe
from berth.worker.errors import (
    DeployerDown,
    DeployFailed,
    InstanceConflict,
    InstanceNotFound,
    InvalidRequest,
    RegistryUnavailable,
    ResourceExhausted,
    WorkerError,
)
from berth.worker.instances import ServeManager
from berth.worker.metrics import WorkerMetrics
from berth.worker.settings import Settings, settings_table
from berth.worker.store import (
    Event,
    InstanceRecord,
    InstanceState,
    Registry,
    launcher_status,
)

__all__ = [
    "DeployFailed",
    "DeployerDown",
    "Event",
    "InstanceConflict",
    "InstanceNotFound",
    "InstanceRecord",
    "InstanceState",
    "InvalidRequest",
    "LauncherRequest",
    "Readiness",
    "ReadinessProbe",
    "Registry",
    "RegistryUnavailable",
    "ResourceExhausted",
    "ServeManager",
    "Settings",
    "WorkerError",
    "WorkerMetrics",
    "create_app",
    "launcher_status",
    "settings_table",
]

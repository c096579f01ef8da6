"""The loops that keep instances as declared: the watcher (status and readiness), restarts, re-adoption at start, Ray followers joining, LoRA adapters re-applied."""

from __future__ import annotations

from berth.worker.reconcile._context import OpLocks, WorkerContext
from berth.worker.reconcile._deployment import (
    create_workload,
    plan_endpoints,
    plan_instance,
)
from berth.worker.reconcile._lifecycle import (
    created_changes,
    owner_value,
)
from berth.worker.reconcile._recovery import RecoveryReport, recover
from berth.worker.reconcile._watcher import Watcher

__all__ = [
    "OpLocks",
    "RecoveryReport",
    "Watcher",
    "WorkerContext",
    "create_workload",
    "created_changes",
    "owner_value",
    "plan_endpoints",
    "plan_instance",
    "recover",
]

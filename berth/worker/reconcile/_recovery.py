"""Re-adoption when the worker starts: nothing lost, nothing orphaned.

For every instance in the registry the deployer is asked, with the recorded identity, about its
workload: one still alive is adopted (its readiness is checked again by the watcher), one the
deployer cannot be asked about yet keeps its state with a "re-adoption pending" reason (the
watcher's first successful observation replaces it), one that vanished is marked failed with
the reason (and restarted if its policy says so), a delete that the previous worker did not
finish is finished. Then every workload carrying this worker's owner
label but no registry entry is reported and stopped; workloads of other berth workers are left
alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from berth.deployers.base import DeployerError, WorkloadNotFound
from berth.schemas.workload import WorkloadStatus
from berth.worker.reconcile._context import WorkerContext
from berth.worker.reconcile._lifecycle import (
    OWNER_LABEL,
    READOPTION_PENDING,
    observed_changes,
)
from berth.worker.reconcile._watcher import schedule_restart, with_restart_note
from berth.worker.store import InstanceRecord, InstanceState

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    adopted: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    orphans_stopped: list[str] = field(default_factory=list)


def recover(ctx: WorkerContext) -> RecoveryReport:
    """Reconcile the registry with the deployer; see the module docstring."""
    report = RecoveryReport()
    for record in ctx.registry.all():
        _recover(ctx, record, report)
    report.orphans_stopped = _stop_orphans(ctx)
    if report.adopted or report.vanished or report.orphans_stopped:
        logger.info("recovery: adopted %s, vanished %s, orphans stopped %s",
                    report.adopted, report.vanished, report.orphans_stopped)
    return report


def _recover(ctx: WorkerContext, record: InstanceRecord, report: RecoveryReport) -> None:
    if record.state.terminal:
        schedule_restart(ctx, record)
        return
    if record.state is InstanceState.STOPPING:
        _finish_delete(ctx, record)
        return
    if not ctx.deployer.serves(record.deployer):
        ctx.registry.update(record.id, state=InstanceState.FAILED, reason=(
            f"recorded on the {record.deployer} deployer but this worker uses {ctx.deployer.name}; "
            f"start it with BERTH_DEPLOYER={record.deployer} to re-adopt"))
        return
    known, status = _adopt(ctx, record)
    if known:
        _apply(ctx, record, status, report)


def _adopt(ctx: WorkerContext, record: InstanceRecord) -> tuple[bool, WorkloadStatus | None]:
    """(known, status): status None when the workload vanished; known False when the deployer is down."""
    try:
        return True, ctx.deployer.adopt(record.workload, dict(record.identity))
    except WorkloadNotFound:
        return True, None
    except DeployerError as exc:
        logger.warning("cannot re-adopt %s yet (%s); the watcher will retry", record.id, exc)
        ctx.registry.update(record.id, reason=f"{READOPTION_PENDING}: {exc}")  # cleared by the watcher's next look
        return False, None


def _apply(ctx: WorkerContext, record: InstanceRecord, status: WorkloadStatus | None, report: RecoveryReport) -> None:
    changes = observed_changes(record, status, None, time.time())
    if record.state is InstanceState.PENDING and status is not None and "state" not in changes:
        changes.update(state=InstanceState.STARTING, started_at=record.started_at or time.time())
    (report.vanished if status is None else report.adopted).append(record.id)
    if not changes:
        return
    updated = ctx.registry.update(record.id, **with_restart_note(record, changes, ctx))
    if updated.state is InstanceState.FAILED:
        schedule_restart(ctx, updated)


def _finish_delete(ctx: WorkerContext, record: InstanceRecord) -> None:
    try:
        ctx.deployer.delete(record.workload, timeout=ctx.settings.stop_timeout)
    except DeployerError as exc:
        logger.warning("cannot finish deleting %s yet: %s", record.id, exc)
        return
    ctx.registry.remove(record.id)
    logger.info("finished deleting %s, interrupted by the previous worker's exit", record.id)


def _stop_orphans(ctx: WorkerContext) -> list[str]:
    known = {record.workload for record in ctx.registry.all()}
    try:
        workloads = ctx.deployer.list()
    except DeployerError as exc:
        logger.warning("cannot list workloads to find orphans: %s", exc)
        return []
    stopped: list[str] = []
    for workload in workloads:
        if workload.name in known:
            continue
        if workload.labels.get(OWNER_LABEL) != ctx.owner:
            logger.info("workload %s is berth's but not this worker's; left alone", workload.name)
            continue
        logger.warning("workload %s has this worker's label but no registry entry; stopping it", workload.name)
        try:
            ctx.deployer.delete(workload.name, timeout=ctx.settings.stop_timeout)
        except DeployerError as exc:
            logger.warning("cannot stop orphan %s: %s", workload.name, exc)
            continue
        ctx.metrics.orphans.inc()
        stopped.append(workload.name)
    return stopped

"""The watcher: a thread that, every poll interval, asks the deployer how each active instance
is doing, checks readiness of the ones starting, records what changed, and restarts failed
instances when they are due.

Checks and restarts run on a small thread pool, one at a time per instance, so a slow deployer
call or an unanswered readiness request delays nothing else. No lock is held while the deployer
or the engine is asked. A result is written as a compare-and-set on the record's revision, and
only while no lifecycle operation (create, delete, restart) holds the instance: such an
operation rewrites the record itself, so what was observed before it is stale and the next tick
observes afresh. When only other fields changed meanwhile (a LoRA adapter recorded, a note in
the reason), the observation still holds for the same run of the workload and is written onto
the new record rather than dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from berth.deployers.base import DeployerError, WorkloadNotFound
from berth.schemas import DeploymentSpec
from berth.schemas.workload import WorkloadState, WorkloadStatus
from berth.utils.backoff import (
    backoff_delay,  # restart n+1 after initial * 2**n s, capped
)
from berth.worker.engine import Readiness
from berth.worker.errors import RegistryUnavailable, WorkerError
from berth.worker.reconcile._context import WorkerContext
from berth.worker.reconcile._deployment import create_workload, plan_instance
from berth.worker.reconcile._lifecycle import (
    created_changes,
    observed_changes,
    restart_due,
)
from berth.worker.reconcile._loras import LoraKeeper
from berth.worker.reconcile._ray_join import join_readiness
from berth.worker.store import InstanceRecord, InstanceState, RayJoin

logger = logging.getLogger(__name__)

_PROBED = (WorkloadState.STARTING, WorkloadState.RUNNING, WorkloadState.UNKNOWN)
#: What makes two readings of a record the same run of its workload.
_RUN_FIELDS = ("state", "workload", "deployer", "started_at", "restarts")
_WRITE_TRIES = 3


def observe_workload(ctx: WorkerContext, record: InstanceRecord) -> tuple[bool, WorkloadStatus | None]:
    """(known, status): status None means the workload is gone; known False means the deployer
    could not be asked (nothing should be concluded)."""
    try:
        return True, ctx.deployer.get(record.workload)
    except WorkloadNotFound:
        return True, None
    except DeployerError as exc:
        logger.debug("cannot get the status of %s: %s", record.id, exc)
        return False, None


def schedule_restart(ctx: WorkerContext, record: InstanceRecord) -> None:
    """Queue the next restart of a failed instance if its policy allows one."""
    if not restart_due(record):
        return
    settings = ctx.settings
    delay = backoff_delay(record.restarts, settings.restart_backoff, settings.restart_backoff_max)
    ctx.restarts.schedule(record.id, delay)
    logger.info("instance %s: restart %d of %d in %.1f s", record.id, record.restarts + 1, record.max_restarts, delay)


def with_restart_note(record: InstanceRecord, changes: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """Say in the reason when a failed instance will be restarted."""
    if changes.get("state") is not InstanceState.FAILED:
        return changes
    if not restart_due(replace(record, **changes)):
        return changes
    delay = backoff_delay(record.restarts, ctx.settings.restart_backoff, ctx.settings.restart_backoff_max)
    note = f"; restart {record.restarts + 1} of {record.max_restarts} in {delay:.1f} s"
    return changes | {"reason": f"{changes.get('reason', record.reason)}{note}"}


def _same_run(a: InstanceRecord, b: InstanceRecord) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in _RUN_FIELDS)


class Watcher:
    """Polls instances on a thread; :meth:`tick` can also be called directly (tests)."""

    def __init__(self, ctx: WorkerContext, *, workers: int = 8) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="berth-watch")
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._busy_done = threading.Condition(self._busy_lock)
        self.loras = LoraKeeper(ctx)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="berth-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the watcher must outlive any one bad tick
                logger.exception("watcher tick failed")
            self._stop.wait(self.ctx.settings.poll_interval)

    def tick(self) -> list[Future[None]]:
        """Submit due restarts and a check of every active instance; returns the jobs."""
        jobs: list[Future[None]] = []
        for instance_id in self.ctx.restarts.pop_due():
            job = self._submit(instance_id, self.restart)
            if job is None:
                self.ctx.restarts.schedule(instance_id, self.ctx.settings.poll_interval)
            else:
                jobs.append(job)
        records = self.ctx.registry.all()
        self.loras.keep_only(record.id for record in records)
        for record in records:
            if record.state.active and (job := self._submit(record.id, self.check)) is not None:
                jobs.append(job)
        return jobs

    def refresh(self, instance_id: str, timeout: float = 30.0) -> None:
        """Check one instance now; when a check or restart of it is already running, wait for that one."""
        job = self._submit(instance_id, self.check)
        if job is not None:
            wait([job], timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        with self._busy_done:
            while instance_id in self._busy and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or not self._busy_done.wait(left):
                    return

    def run_once(self, timeout: float = 30.0) -> None:
        """One tick, waiting for its jobs (tests and tools drive the watcher with this)."""
        wait(self.tick(), timeout=timeout)

    def _submit(self, instance_id: str, job: Callable[[str], None]) -> Future[None] | None:
        with self._busy_lock:
            if instance_id in self._busy or self._stop.is_set():
                return None
            self._busy.add(instance_id)
        try:
            return self._pool.submit(self._guarded, instance_id, job)
        except RuntimeError:  # pool shut down
            self._done(instance_id)
            return None

    def _guarded(self, instance_id: str, job: Callable[[str], None]) -> None:
        try:
            job(instance_id)
        except RegistryUnavailable as exc:  # locked or full: one line, the next tick retries
            logger.warning("instance %s: %s; will retry", instance_id, exc)
        except Exception:  # one instance's bad check must not stop the others
            logger.exception("checking instance %s failed", instance_id)
        finally:
            self._done(instance_id)

    def _done(self, instance_id: str) -> None:
        with self._busy_lock:
            self._busy.discard(instance_id)
            self._busy_done.notify_all()

    # -- status and readiness --------------------------------------------------------------

    def check(self, instance_id: str) -> None:
        record = self.ctx.registry.get(instance_id)
        if record is None or not record.state.active:
            return
        known, status = observe_workload(self.ctx, record)
        if not known:
            return
        readiness = self._readiness(record, status)
        changes = observed_changes(record, status, readiness, time.time())
        if changes:
            self._apply(record, changes)
        self.loras.ensure(self.ctx.registry.get(instance_id) or record)  # runtime LoRA adapters back after a (re)start

    def _readiness(self, record: InstanceRecord, status: WorkloadStatus | None) -> Readiness | None:
        if status is None or status.state not in _PROBED or record.state is InstanceState.RUNNING:
            return None
        base_url = record.endpoints.base_url
        if not base_url:
            return Readiness(True)  # a follower serves no HTTP: alive is all it can be
        if (join := record.endpoints.ray_join) is not None and (waiting := self._followers(record, join)) is not None:
            return waiting
        return self.ctx.probe.check(base_url, list(record.endpoints.served_names))

    def _followers(self, record: InstanceRecord, join: RayJoin) -> Readiness | None:
        """None once every Ray node of a leader has joined; else who is missing (failed past the timeout)."""
        waited = time.time() - (record.started_at or record.created_at)
        return join_readiness(self.ctx.engine, join, waited, self.ctx.settings.distributed_join_timeout)

    def _apply(self, record: InstanceRecord, changes: dict[str, Any]) -> None:
        if not self.ctx.locks.acquire(record.id, blocking=False):
            logger.debug("instance %s: an operation is rewriting it; the next tick observes its outcome", record.id)
            return
        try:
            written = self._write(record, changes)
        finally:
            self.ctx.locks.release(record.id)
        if written is not None:
            self._after(*written)

    def _write(self, record: InstanceRecord, changes: dict[str, Any]) -> tuple[InstanceRecord, InstanceRecord] | None:
        """(before, after) of a compare-and-set of ``changes``, retried on a newer record of the same
        run; None when the record is gone or another run of it began."""
        for _ in range(_WRITE_TRIES):
            updated = self.ctx.registry.update_if(record.id, record.revision, **with_restart_note(record, changes, self.ctx))
            if updated is not None:
                return record, updated
            current = self.ctx.registry.get(record.id)
            if current is None or not _same_run(record, current):
                return None
            record = current
        logger.info("instance %s changes too often to record what was observed; the next tick retries", record.id)
        return None

    def _after(self, before: InstanceRecord, after: InstanceRecord) -> None:
        if after.state is InstanceState.RUNNING and before.state is not InstanceState.RUNNING:
            if after.ready_at and after.started_at:
                self.ctx.metrics.start_to_ready.observe(max(0.0, after.ready_at - after.started_at))
            logger.info("instance %s is ready", after.id)
        if after.state is InstanceState.FAILED and before.state is not InstanceState.FAILED:
            logger.warning("instance %s failed: %s", after.id, after.reason)
            schedule_restart(self.ctx, after)

    # -- restarts --------------------------------------------------------------------------

    def restart(self, instance_id: str) -> None:
        with self.ctx.locks.held(instance_id):
            record = self.ctx.registry.get(instance_id)
            if record is None or not restart_due(record):
                return
            try:
                self.ctx.deployer.delete(record.workload, timeout=self.ctx.settings.stop_timeout)
            except DeployerError as exc:
                logger.warning("cannot remove %s's old workload before restarting: %s", instance_id, exc)
                self.ctx.restarts.schedule(instance_id, self.ctx.settings.restart_backoff)
                return
            self._redeploy(record)

    def _redeploy(self, record: InstanceRecord) -> None:
        count = record.restarts + 1
        record = self.ctx.registry.update(
            record.id, state=InstanceState.PENDING, restarts=count, exit_code=None,
            reason=f"restarting (restart {count} of {record.max_restarts})",
        )
        self.ctx.metrics.restarts.inc()
        try:
            plan = plan_instance(DeploymentSpec.model_validate(record.spec), self.ctx.owner)
            status = create_workload(self.ctx, plan)
        except WorkerError as exc:
            failed = self.ctx.registry.update(record.id, state=InstanceState.FAILED, reason=f"restart failed: {exc}")
            schedule_restart(self.ctx, failed)
            return
        self.ctx.registry.update(record.id, **created_changes(status, time.time()))
        logger.info("instance %s restarted (restart %d of %d)", record.id, count, record.max_restarts)

"""``ServeManager``: the node's instances for their whole life.

Create: check the id, admit the request (ports and GPUs allocated) and plan it with the backend
against a snapshot of what is held, write it to the registry by the allocator's compare-and-set
(admitted again when something it chose was taken meanwhile), *then* hand the workload to the
deployer. Ports can be reserved for an instance before it is created (:meth:`ServeManager.reserve_ports`).
Watch: a background watcher follows status and readiness and restarts failed instances per
policy (see :mod:`berth.worker.reconcile`). Delete: stop with a grace period, holding only that
instance's lock, so other requests go on. Start: re-adopt what the registry knows and stop
orphans.

Thread-safe: the API calls it from many threads at once. Its methods block (SQLite, the
deployer, port probes): callers on an event loop send them to a thread. Locks: the allocator's
(:class:`~berth.worker.admission.Allocator`) covers only its check-then-write step; each
instance's operation lock (create, delete, restart of one id never overlap) is held across that
instance's deployer calls, and only that instance waits on it. No other lock is held across I/O.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from berth.backends import ServePlan
from berth.deployers.base import (
    RUN_CONTAINER,
    Deployer,
    DeployerError,
    DeployerUnavailable,
    WorkloadNotFound,
)
from berth.schemas import DeploymentSpec, LogChunk
from berth.worker.admission import (
    Admitted,
    Allocator,
    Holdings,
    LauncherRequest,
    Placement,
    admit_launcher,
    admit_spec,
    check_instance_id,
)
from berth.worker.engine import EngineClient, Probe
from berth.worker.errors import (
    DeployerDown,
    DeployFailed,
    InstanceNotFound,
    WorkerError,
)
from berth.worker.instances import _loras
from berth.worker.instances._deployer_factory import open_deployer
from berth.worker.metrics import WorkerMetrics
from berth.worker.reconcile import (
    RecoveryReport,
    Watcher,
    WorkerContext,
    create_workload,
    created_changes,
    owner_value,
    plan_endpoints,
    plan_instance,
    recover,
)
from berth.worker.redact import redact_bytes, secret_values
from berth.worker.settings import Settings
from berth.worker.store import Event, InstanceRecord, InstanceState, Registry

logger = logging.getLogger(__name__)

Admit = Callable[[Holdings], Admitted]


def _failure(exc: DeployerError) -> type[WorkerError]:
    """503 while the deployer's engine cannot be reached (retry later), else 500."""
    return DeployerDown if isinstance(exc, DeployerUnavailable) else DeployFailed


class ServeManager:
    """Owns this worker's instances. Construct (no I/O), :meth:`start`, use, :meth:`close`.

    ``deployer`` and ``probe`` may be given (tests pass a MemoryDeployer); by default the
    deployer comes from the settings, with the launcher falling back to processes.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        deployer: Deployer | None = None,
        probe: Probe | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._given_deployer = deployer
        self._probe = probe  # None: the worker's engine client checks readiness
        self._ctx: WorkerContext | None = None
        self._allocator: Allocator | None = None
        self._watcher: Watcher | None = None
        self.recovery = RecoveryReport()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, watch: bool = True) -> ServeManager:
        """Open the registry and deployer, re-adopt instances, start the watcher."""
        registry = Registry(self.settings.data_dir, retention=self.settings.event_retention).open()
        deployer = self._given_deployer or open_deployer(self.settings)
        owner = owner_value(self.settings.data_dir)
        engine = EngineClient(timeout=self.settings.probe_timeout)
        self._ctx = WorkerContext(self.settings, deployer, registry, self._probe or engine, self.metrics, owner, engine)
        self._allocator = Allocator(self.settings, registry)
        self.metrics.track_instances(lambda: [record.state for record in registry.all()])
        self.recovery = recover(self._ctx)
        self._watcher = Watcher(self._ctx)
        if watch:
            self._watcher.start()
        logger.info("worker started: %d instances, deployer %s", len(registry.all()), deployer.name)
        return self

    def close(self) -> None:
        """Stop watching; stop instances only if the settings say so; release everything."""
        if self._ctx is None:
            return
        if self._watcher is not None:
            self._watcher.stop()
        if self.settings.stop_instances_on_exit:
            self.delete_all()
        self._release_deployer()
        self._ctx.probe.close()
        self._ctx.engine.close()
        self._ctx.registry.close()
        self._ctx = None

    def _release_deployer(self) -> None:
        """Close the deployer; stop its helper processes too (the launcher's daemon) when no
        instance may still run."""
        deployer = self._context.deployer
        if not any(not r.state.terminal for r in self._context.registry.all()):
            try:
                if deployer.shutdown():
                    logger.info("no instance left running: stopped the %s deployer's helpers", deployer.name)
            except DeployerError as exc:
                logger.warning("could not stop the %s deployer's helpers: %s", deployer.name, exc)
        deployer.close()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run and :meth:`close` has not."""
        return self._ctx is not None

    @property
    def _context(self) -> WorkerContext:
        if self._ctx is None:
            raise RuntimeError("ServeManager.start() has not been called")
        return self._ctx

    @property
    def _allocation(self) -> Allocator:
        if self._allocator is None:
            raise RuntimeError("ServeManager.start() has not been called")
        return self._allocator

    @property
    def _watch(self) -> Watcher:
        if self._watcher is None:
            raise RuntimeError("ServeManager.start() has not been called")
        return self._watcher

    @property
    def deployer(self) -> Deployer:
        """The deployer (read-only use: tools and tests look at workloads; changes go through the manager)."""
        return self._context.deployer

    @property
    def deployer_name(self) -> str:
        """The name of the deployer new instances go to (``auto`` decides per plan)."""
        return self._context.deployer.name

    @property
    def owner(self) -> str:
        """This worker's owner label value: what marks workloads as this worker's."""
        return self._context.owner

    # -- queries ---------------------------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRecord:
        record = self._context.registry.get(instance_id)
        if record is None:
            raise InstanceNotFound(f"instance {instance_id!r} not found")
        return record

    def find(self, instance_id: str) -> InstanceRecord | None:
        """The instance's record, or None when there is none."""
        return self._context.registry.get(instance_id)

    def list(self) -> list[InstanceRecord]:
        return self._context.registry.all()

    def holdings(self) -> Holdings:
        """Ports and GPUs held by every instance, each mapped to its holder, and ports reserved for
        instances not created yet, mapped to the reservation's key."""
        return self._allocation.holdings()

    def note(self, instance_id: str, kind: str, data: dict[str, Any]) -> int:
        """Record an event about an instance (``kind``, a JSON object) without changing it; its revision."""
        return self._context.registry.note(instance_id, kind, data)

    def refresh(self, instance_id: str, timeout: float = 30.0) -> InstanceRecord | None:
        """Check the instance's workload and readiness now, through the watcher's one-check-at-a-time
        rule (a check already running is waited for, not doubled); its record afterwards."""
        self._watch.refresh(instance_id, timeout)
        return self.find(instance_id)

    def logs(self, instance_id: str, start: int, end: int | None, *, container: str = RUN_CONTAINER) -> LogChunk:
        """Bytes ``start..end`` (inclusive) of an instance's log, its secrets overwritten by ``*``.

        The read is widened by the longest secret's length so a secret cut by the range is
        still hidden; an instance whose workload is gone has an empty log.
        """
        record = self.get(instance_id)
        secrets = secret_values(record.spec)
        pad = max((len(s.encode()) for s in secrets), default=1) - 1
        low = max(0, start - pad)
        chunk = self._read_log(record, container, low, None if end is None else end + pad)
        data = redact_bytes(chunk.data, secrets) if secrets else chunk.data
        offset = start - low
        stop = None if end is None else offset + (end - start + 1)
        return LogChunk(data=data[offset:stop], start=start, total=chunk.total)

    def _read_log(self, record: InstanceRecord, container: str, start: int, end: int | None) -> LogChunk:
        try:
            return self._context.deployer.logs(record.workload, container=container, start=start, end=end)
        except WorkloadNotFound:
            return LogChunk(data=b"", start=start, total=0)
        except DeployerError as exc:
            raise _failure(exc)(f"cannot read the log of {record.id!r}: {exc}") from exc

    def log_size(self, instance_id: str, *, container: str = RUN_CONTAINER) -> int:
        return self.logs(instance_id, 0, 0, container=container).total

    def events_since(self, revision: int, limit: int = 500) -> list[Event]:
        return self._context.registry.events_since(revision, limit)

    @property
    def revision(self) -> int:
        return self._context.registry.revision

    def oldest_revision(self) -> int:
        return self._context.registry.oldest_revision()

    # -- create ----------------------------------------------------------------------------

    def create_from_launcher(self, request: LauncherRequest, instance_id: str | None = None) -> InstanceRecord:
        """An instance from a launcher-API body; ``instance_id`` defaults to a new UUID."""
        instance_id = check_instance_id(instance_id or str(uuid.uuid4()))
        policy = request.restart_policy or self.settings.restart_policy
        record, _ = self._create(instance_id, "launcher", policy,
                                 lambda held: admit_launcher(instance_id, request, self.settings, held))
        return record

    def create_from_spec(self, spec: DeploymentSpec, *, shared_gpus: bool = False) -> tuple[InstanceRecord, ServePlan]:
        """An instance from a deployment spec; its id is ``spec.instance.name``."""
        instance_id = check_instance_id(spec.instance.name, "instance.name")
        policy = self.settings.restart_policy if spec.model.restart_on_error else "never"
        record, plan = self._create(instance_id, "spec", policy,
                                    lambda held: admit_spec(spec, self.settings, held, shared_gpus=shared_gpus))
        return record, plan

    def _create(self, instance_id: str, source: str, policy: str, admit: Admit) -> tuple[InstanceRecord, ServePlan]:
        def prepare(held: Holdings) -> Placement:  # no lock held: port probes, the model's files
            admitted = admit(held)
            plan = plan_instance(admitted.spec, self._context.owner)
            return Placement(admitted, self._new_record(instance_id, source, policy, admitted, plan), plan)

        # claim: the instance's lock is free (a new id, or a delete about to let go of it)
        placed = self._allocation.place(instance_id, prepare, claim=self._context.locks.acquire)
        try:
            return self._deploy(placed.record, placed.plan), placed.plan
        finally:
            self._context.locks.release(instance_id)

    def _new_record(self, instance_id: str, source: str, policy: str, admitted: Admitted, plan: ServePlan) -> InstanceRecord:
        return InstanceRecord(
            id=instance_id,
            source=source,
            spec=admitted.spec.model_dump(mode="json", exclude_none=True),
            deployer=self._context.deployer.name,
            workload=plan.name,
            reason="creating the workload",
            ports=admitted.ports.stored(),
            gpus=admitted.gpus,
            restart_policy=policy,
            max_restarts=self.settings.max_restarts,
            endpoints=plan_endpoints(plan, admitted.spec),
        )

    def _deploy(self, record: InstanceRecord, plan: ServePlan) -> InstanceRecord:
        try:
            status = create_workload(self._context, plan)
        except WorkerError:
            self._context.registry.remove(record.id)
            raise
        logger.info("instance %s created on the %s deployer", record.id, status.deployer)
        return self._context.registry.update(record.id, deployer=status.deployer, **created_changes(status, time.time()))

    # -- reservations ----------------------------------------------------------------------

    def reserve_ports(self, key: str, count: int) -> list[int]:
        """Keep ``count`` ports of ``instance_port_range`` for an instance not created yet.

        ``key`` is the id the instance will have: creating it may use exactly these ports and
        consumes the reservation (a create that then fails leaves neither record nor reservation).
        Idempotent: the same key gets its existing ports back, whatever ``count``.
        Reservations are in the registry's file (a restarted worker keeps them) and count in
        :meth:`holdings`; never a port an instance or another reservation holds, or one bound here.
        """
        return self._allocation.reserve(key, count)

    def release_reservation(self, key: str) -> None:
        """Drop ``key``'s reservation (its instance will not be created); no error when there is none."""
        self._allocation.release(key)

    # -- delete ----------------------------------------------------------------------------

    def delete(self, instance_id: str) -> InstanceRecord:
        """Stop an instance (grace period, then kill) and forget it; returns its last record."""
        with self._context.locks.held(instance_id):
            record = self.get(instance_id)
            self._context.registry.update(instance_id, state=InstanceState.STOPPING, reason="stopping on request")
            try:
                status = self._context.deployer.delete(record.workload, timeout=self.settings.stop_timeout)
            except DeployerError as exc:  # it stays as it was, its scheduled restart included
                self._context.registry.update(instance_id, state=record.state, reason=f"stop failed: {exc}")
                raise _failure(exc)(f"cannot stop instance {instance_id!r}: {exc}") from exc
            final = self._context.registry.remove(instance_id) or record
            self._context.restarts.cancel(instance_id)
        exit_code = status.exit_code if status is not None else final.exit_code
        logger.info("instance %s deleted", instance_id)
        return replace(final, state=InstanceState.STOPPED, exit_code=exit_code)

    def delete_all(self) -> list[InstanceRecord]:
        """Delete every instance, all grace periods running side by side."""
        ids = [record.id for record in self.list()]
        if not ids:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(ids)), thread_name_prefix="berth-stop") as pool:
            results = list(pool.map(self._delete_quietly, ids))
        return [record for record in results if record is not None]

    def _delete_quietly(self, instance_id: str) -> InstanceRecord | None:
        try:
            return self.delete(instance_id)
        except InstanceNotFound:
            return None
        except WorkerError as exc:
            logger.warning("could not delete %s: %s", instance_id, exc)
            return None

    # -- runtime LoRA adapters (the logic: instances/_loras.py) ----------------------------

    @property
    def engine(self) -> EngineClient:
        """The worker's one client to its engines (swap's sleep and wake go through it)."""
        return self._context.engine

    def load_lora(self, instance_id: str, name: str, path: str) -> InstanceRecord:
        """Load a LoRA adapter into the running instance's engine and record it (kept across
        restarts); 409 when the instance cannot take it or another instance answers to ``name``."""
        return _loras.load_lora(self._context, check_instance_id(instance_id), name, path)

    def unload_lora(self, instance_id: str, name: str) -> InstanceRecord:
        """Unload a runtime LoRA adapter and forget it; 404 when the instance has none of that name."""
        return _loras.unload_lora(self._context, check_instance_id(instance_id), name)

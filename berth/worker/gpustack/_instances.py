"""Keeping GPUStack's model instances and this worker's berth instances in step, both ways.

GPUStack -> berth (:meth:`InstanceSync.reconcile`, for each instance event and every resync):

* ``scheduled`` on this worker: (re)start requested. Any old berth instance is stopped, ports are
  reserved with the manager (:meth:`ServeManager.reserve_ports`, keyed by the berth id, durable;
  the create of that instance consumes the reservation) and reported with ``initializing``.
* ``initializing``/``downloading``: GPUStack checks the model files (see :mod:`.files`); berth waits.
* ``starting`` (files ready, ``resolved_path`` set): berth plans and creates ``gpustack-<id>``
  on those ports; a refusal is reported as ``error`` with berth's message.
* deleted, or no longer assigned here: the berth instance is stopped, its reservation released.
  The stop holds for that assignment only: a stale snapshot never revives it, but GPUStack
  placing the instance here again (its state back to ``scheduled``, ``initializing``,
  ``downloading`` or ``starting``) is a new assignment and starts it. What is kept per instance
  (locks, stops) is dropped once GPUStack no longer lists the instance.

berth -> GPUStack (:meth:`InstanceSync.report`, every poll interval): ``running`` once berth's
readiness says so (``/health`` 200 and ``/v1/models`` lists the name), ``error`` naming the
cause when the engine fails or vanishes, and ``running`` again for an instance GPUStack marked
``unreachable`` while berth was away but whose engine kept serving.

A subordinate worker of a distributed instance does the same for its part, in its own entry of
``distributed_servers.subordinate_workers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from pydantic import ValidationError

from berth.schemas import Worker
from berth.schemas.errors import validation_messages
from berth.worker.errors import InstanceNotFound, WorkerError
from berth.worker.gpustack._client import GPUStackClient, ServerRefused
from berth.worker.gpustack._translate import (
    Assignment,
    Role,
    berth_id,
    gpustack_id,
    model_path_of,
    role_of,
    subordinate_index,
    to_spec,
)
from berth.worker.instances import ServeManager
from berth.worker.store import InstanceRecord, InstanceState

logger = logging.getLogger(__name__)

SCHEDULED, INITIALIZING, DOWNLOADING, STARTING = "scheduled", "initializing", "downloading", "starting"
RUNNING, ERROR, UNREACHABLE = "running", "error", "unreachable"
#: How far an assignment got: a snapshot at an earlier step than the one a stop saw is a new assignment.
_STEP = {SCHEDULED: 0, INITIALIZING: 1, DOWNLOADING: 2, STARTING: 3}
_RUN_STEP = len(_STEP)


def _step(state: Any) -> int:
    return _STEP.get(state, _RUN_STEP) if isinstance(state, str) else _RUN_STEP


def _distributed(instance: dict[str, Any]) -> bool:
    return bool((instance.get("distributed_servers") or {}).get("subordinate_workers"))


@dataclass(slots=True)
class _Held:
    """One instance's lock and how many coroutines hold or wait for it (the entry goes at zero)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class InstanceSync:
    """GPUStack's instances for worker ``worker_id`` against ``manager``'s. Runs on one event loop;
    the manager's blocking calls go to threads under ``limiter`` (the app's; anyio's default if None)."""

    def __init__(self, manager: ServeManager, client: GPUStackClient, worker: Callable[[], Worker],
                 limiter: anyio.CapacityLimiter | None = None) -> None:
        self.manager = manager
        self.client = client
        self._worker = worker
        self._limiter = limiter
        self.known: dict[int, dict[str, Any]] = {}
        self._locks: dict[int, _Held] = {}
        #: stopped here, with the step the assignment had reached: that assignment is never restarted
        self._stopped: dict[int, int] = {}

    @property
    def worker_id(self) -> int:
        worker_id = self._worker().id
        assert worker_id is not None
        return worker_id

    @asynccontextmanager
    async def _lock(self, instance_id: int) -> AsyncIterator[None]:
        """One coroutine at a time per instance; the entry lives only while someone holds or waits."""
        held = self._locks.setdefault(instance_id, _Held())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._locks[instance_id]

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter, abandon_on_cancel=True)

    def _record(self, instance_id: int) -> InstanceRecord | None:
        try:
            return self.manager.get(berth_id(instance_id))
        except InstanceNotFound:
            return None

    def local_ids(self) -> list[int]:
        """GPUStack ids of the berth instances GPUStack asked for."""
        return [i for i in (gpustack_id(r.id) for r in self.manager.list()) if i is not None]

    # -- GPUStack -> berth ---------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        instance_id = data.get("id", event.get("id"))
        if not isinstance(instance_id, int):
            return
        if event.get("type") == 3:
            await self.forget(instance_id, "deleted in GPUStack")
        elif event.get("type") in (1, 2) and "state" in data:
            await self.reconcile(data)

    async def resync(self, instances: list[dict[str, Any]]) -> None:
        """Reconcile every instance GPUStack lists; stop the berth ones it no longer has here."""
        listed = {i["id"]: i for i in instances}
        mine = {i: v for i, v in listed.items() if role_of(v, self.worker_id) is not Role.NONE}
        for instance_id in set(self.local_ids()) - set(mine):
            await self.forget(instance_id, "no longer assigned to this worker in GPUStack")
        for instance in mine.values():
            await self.reconcile(instance)
        for instance_id in set(self._stopped) - set(listed):  # gone from GPUStack: never seen again
            self._stopped.pop(instance_id, None)

    async def forget(self, instance_id: int, why: str) -> None:
        """Stop the instance's berth part for the assignment GPUStack last showed here."""
        async with self._lock(instance_id):
            self._stopped[instance_id] = _step((self.known.get(instance_id) or {}).get("state"))
            await self._forget_unlocked(instance_id, why)

    async def _delete(self, instance_id: int) -> None:
        try:
            await self._in_thread(self.manager.delete, berth_id(instance_id))
        except InstanceNotFound:
            pass

    def _still_stopped(self, instance: dict[str, Any]) -> bool:
        """Whether a stop holds for this snapshot: yes unless it shows a new assignment here, an
        earlier step than the stopped one reached (a stale snapshot shows that step or a later one)."""
        instance_id, state = instance["id"], instance.get("state")
        if instance_id not in self._stopped:
            return False
        if _step(state) < self._stopped[instance_id]:
            logger.info("GPUStack instance %d: assigned to this worker again (%s)", instance_id, state)
            del self._stopped[instance_id]
            return False
        return True

    async def reconcile(self, instance: dict[str, Any]) -> None:
        instance_id = instance["id"]
        async with self._lock(instance_id):
            if self._still_stopped(instance):
                return
            role = role_of(instance, self.worker_id)
            if role is Role.NONE:
                await self._forget_unlocked(instance_id, "no longer assigned to this worker in GPUStack")
                return
            self.known[instance_id] = instance
            if role is Role.MAIN:
                await self._main(instance)
            else:
                await self._subordinate(instance)

    async def _main(self, instance: dict[str, Any]) -> None:
        state, instance_id = instance.get("state"), instance["id"]
        record = self._record(instance_id)
        if state == SCHEDULED:
            if record is not None:
                await self._delete(instance_id)
            await self._initialize(instance)
        elif state == STARTING and record is None:
            await self._create(instance, Role.MAIN)
        elif state in (RUNNING, STARTING) and record is not None:
            await self._report_main(instance, record)
        elif state == RUNNING and record is None:
            await self._put_main(instance_id, ERROR, "the engine is gone from this worker (stopped outside GPUStack)")
        elif state == UNREACHABLE and record is not None and record.state is InstanceState.RUNNING:
            await self._put_main(instance_id, RUNNING, "")

    async def _initialize(self, instance: dict[str, Any]) -> None:
        """A new assignment: the old reservation goes, ports are reserved afresh and reported."""
        instance_id, key = instance["id"], berth_id(instance["id"])
        try:
            await self._in_thread(self.manager.release_reservation, key)
            ports = await self._in_thread(self.manager.reserve_ports, key, 3 if _distributed(instance) else 1)
        except WorkerError as exc:
            await self._put_main(instance_id, ERROR, f"berth could not allocate ports: {exc}")
            return

        def change(current: dict[str, Any]) -> dict[str, Any]:
            return current | {"state": INITIALIZING, "state_message": "", "port": ports[0], "ports": ports}

        await self._update(instance_id, change)
        logger.info("GPUStack instance %d: initializing on ports %s", instance_id, ports)

    async def _create(self, instance: dict[str, Any], role: Role) -> bool:
        instance_id = instance["id"]
        model_path = model_path_of(instance)
        if not model_path:
            await self._fail(instance, role, "GPUStack gave no model path (resolved_path or local_path)")
            return False
        try:
            model = await self.client.call("GET", f"/models/{instance['model_id']}")
            spec = to_spec(Assignment(instance=instance, model=model, worker=self._worker(), model_path=model_path))
            await self._in_thread(self.manager.create_from_spec, spec)
        except ValidationError as exc:
            await self._fail(instance, role, "berth cannot accept the instance: " + "; ".join(validation_messages(exc)))
            return False
        except WorkerError as exc:
            await self._fail(instance, role, f"berth refused to start the instance: {exc}")
            return False
        logger.info("GPUStack instance %d: started as %s (%s)", instance_id, berth_id(instance_id), role.value)
        return True

    async def _fail(self, instance: dict[str, Any], role: Role, message: str) -> None:
        logger.warning("GPUStack instance %d: %s", instance["id"], message)
        if role is Role.MAIN:
            await self._put_main(instance["id"], ERROR, message)
        else:
            await self._put_subordinate(instance["id"], ERROR, message)

    # -- berth -> GPUStack ---------------------------------------------------------------------

    async def report(self) -> None:
        """Push berth's view of each instance GPUStack knows to GPUStack, where it differs."""
        for instance_id in list(self.known):
            async with self._lock(instance_id):
                instance, record = self.known.get(instance_id), self._record(instance_id)
                if instance is None or record is None:
                    continue
                if role_of(instance, self.worker_id) is Role.MAIN:
                    await self._report_main(instance, record)
                else:
                    await self._report_subordinate(instance, record)

    async def _report_main(self, instance: dict[str, Any], record: InstanceRecord) -> None:
        state = instance.get("state")
        if record.state is InstanceState.RUNNING and state in (STARTING, UNREACHABLE):
            await self._put_main(instance["id"], RUNNING, "")
        elif record.state.terminal and state in (STARTING, RUNNING, UNREACHABLE):
            await self._put_main(instance["id"], ERROR, _failure(record))

    async def _put_main(self, instance_id: int, state: str, message: str) -> None:
        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            if current.get("state") == state and (current.get("state_message") or "") == message:
                return None
            return current | {"state": state, "state_message": message}

        await self._update(instance_id, change)
        logger.info("GPUStack instance %d: reported %s%s", instance_id, state, f" ({message})" if message else "")

    async def _update(self, instance_id: int, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        try:
            updated = await self.client.update("model-instances", instance_id, change)
        except ServerRefused as exc:
            if exc.status != 404:
                raise
            await self._forget_unlocked(instance_id, "deleted in GPUStack")
            return
        if isinstance(updated, dict):
            self.known[instance_id] = updated

    async def _forget_unlocked(self, instance_id: int, why: str) -> None:
        self.known.pop(instance_id, None)
        await self._in_thread(self.manager.release_reservation, berth_id(instance_id))
        if self._record(instance_id) is not None:
            logger.info("GPUStack instance %d: %s; stopping %s", instance_id, why, berth_id(instance_id))
            await self._delete(instance_id)

    # -- subordinate workers ---------------------------------------------------------------------

    async def _subordinate(self, instance: dict[str, Any]) -> None:
        index = subordinate_index(instance, self.worker_id)
        assert index is not None
        entry = instance["distributed_servers"]["subordinate_workers"][index]
        mode = (instance.get("distributed_servers") or {}).get("mode")
        main_started = instance.get("state") in (STARTING, RUNNING)
        record = self._record(instance["id"])
        if record is None and entry.get("state") not in (RUNNING, ERROR) and (main_started or mode != "initialize_later"):
            if await self._create(instance, Role.SUBORDINATE):
                await self._put_subordinate(instance["id"], RUNNING if mode == "initialize_later" else INITIALIZING, "")
        elif record is not None:
            await self._report_subordinate(instance, record)

    async def _report_subordinate(self, instance: dict[str, Any], record: InstanceRecord) -> None:
        index = subordinate_index(instance, self.worker_id)
        if index is None:
            return
        current = instance["distributed_servers"]["subordinate_workers"][index].get("state")
        if record.state is InstanceState.RUNNING and current not in (RUNNING, ERROR):
            await self._put_subordinate(instance["id"], RUNNING, "")
        elif record.state.terminal and current != ERROR:
            await self._put_subordinate(instance["id"], ERROR, _failure(record))

    async def _put_subordinate(self, instance_id: int, state: str, message: str) -> None:
        worker_id = self.worker_id

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            index = subordinate_index(current, worker_id)
            if index is None:
                return None
            servers = dict(current["distributed_servers"])
            entries = [dict(e) for e in servers["subordinate_workers"]]
            entries[index].update(state=state, state_message=message)
            servers["subordinate_workers"] = entries
            return current | {"distributed_servers": servers}

        await self._update(instance_id, change)
        logger.info("GPUStack instance %d: subordinate part reported %s", instance_id, state)


def _failure(record: InstanceRecord) -> str:
    """Why an engine ended, for GPUStack's ``state_message``."""
    code = f" (exit code {record.exit_code})" if record.exit_code is not None else ""
    reason = record.reason or record.state.value
    return f"berth instance {record.id} {record.state.value}{code}: {reason}; see its logs"

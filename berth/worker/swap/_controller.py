"""``SwapController``: registered models started, woken, put to sleep and parked on demand.

It is the worker's :class:`~berth.worker.routing.ModelActivator`: the inference router asks
it for a model no running instance serves, and it makes one ready. As a
:class:`~berth.worker.routing.RouteGate` it tells the router which running instances must not
get new requests: sleeping engines, and engines being evicted.

* **Single flight.** Every request for one model joins the one activation in progress; the
  activation runs on a thread of its own and goes on when a requester stops waiting, so a retry
  finds the engine ready (or closer to it).
* **One operation per model.** Activations, parks and sleeps of one model never overlap (a lock
  per model name); different models proceed side by side. Budget decisions are made one at a
  time, without a lock held across drains, stops or starts (:mod:`._eviction`).
* **Budget.** With ``swap_max_engines`` (engines per worker) or ``swap_gpu_memory_gib``
  (accelerator memory per GPU) set, starting or waking one more engine first evicts the least
  recently used unpinned running models (on its GPUs, for memory): to sleep where registered with
  a sleep level, else parked. An engine being evicted takes no new requests and finishes those in
  flight first (none routed to it in the last half second, vLLM reporting none running or
  waiting; metrics that cannot be read count as requests in flight); one that does not drain in
  time is skipped (event ``model.eviction_skipped``, with why), and when nothing can be freed the
  request gets 503 with ``Retry-After`` and the reasons.
* **Idle.** A thread parks (or puts to sleep) models unused for their idle timeout, and parks
  models asleep for ``swap_asleep_timeout``.

**Threads and the event loop.** The router calls :meth:`SwapController.ensure_ready`,
:meth:`~SwapController.touch` and :meth:`~SwapController.routable` on the event loop: they only
read in-memory copies (the definitions', the registry's) and :class:`~._state.SwapState`, whose
one lock is never held across I/O, and they never wait on a model's lock, the budget's or an
SQLite commit. Everything else (the ``/v2/models`` handlers, activations, the policy) runs on
threads.

Every change is an event in the worker's watch stream (``type`` ``model.<what>``) and counted
in the metrics of :mod:`._metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

from berth.schemas import DeploymentSpec
from berth.utils.waiting import WaitTimeout, wait_until
from berth.worker.admission import LauncherRequest
from berth.worker.errors import InstanceConflict
from berth.worker.instances import ServeManager
from berth.worker.reconcile import OpLocks
from berth.worker.routing import ModelUnavailable, UnknownModel
from berth.worker.store import InstanceRecord, InstanceState
from berth.worker.swap._definitions import DefinitionStore, ModelDefinition
from berth.worker.swap._engine import EngineControl
from berth.worker.swap._errors import ModelStateConflict
from berth.worker.swap._eviction import Evictor
from berth.worker.swap._metrics import SwapMetrics
from berth.worker.swap._policy import is_asleep, model_state
from berth.worker.swap._registration import ModelRegistration, build_definition
from berth.worker.swap._state import Activation, SwapState
from berth.worker.swap._transitions import DEFAULT_ETA_S, Transitions
from berth.worker.swap._views import model_view

logger = logging.getLogger(__name__)

_READY_POLL_S = 0.05
#: How long an API operation waits for another operation on the same model (not for a start).
_OPERATION_WAIT_S = 10.0


class SwapController:
    """Construct (no I/O), :meth:`start` after the manager has started, use, :meth:`close`."""

    def __init__(self, manager: ServeManager, *, engine: EngineControl | None = None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self._store = DefinitionStore(self.settings.data_dir)
        self._state = SwapState()
        self._models = OpLocks()  # one operation per model name
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="berth-swap")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics = SwapMetrics.of(manager.metrics.registry, self._states)
        control = engine or EngineControl(lambda: manager.engine)  # the worker's one engine client
        self._transitions = Transitions(manager, self._store, control, self._state, self._models, self.metrics)
        self._evictor = Evictor(self._transitions)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, policy: bool = True) -> SwapController:
        """Open the definitions and start the idle policy's thread (``policy=False``: tests tick it)."""
        self._store.open()
        self._stop = threading.Event()  # a closed controller may be started again (a new lifespan)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="berth-swap")
        self._transitions.engine.open()
        names = [d.name for d in self._store.all()]
        self._state.reset_uses(names)  # a restart counts as a use
        if policy:
            self._thread = threading.Thread(target=self._run_policy, name="berth-swap-policy", daemon=True)
            self._thread.start()
        logger.info("model swapping: %d models registered", len(names))
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._transitions.engine.close()
        self._store.close()

    @property
    def store(self) -> DefinitionStore:
        if not self._store.opened:
            raise RuntimeError("SwapController.start() has not been called")
        return self._store

    # -- the activator (the inference router's side: on the event loop, never blocking) ------

    async def ensure_ready(self, model: str, timeout: float) -> str:
        flight = self._flight(model)
        try:
            activation = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(flight)), timeout)
        except TimeoutError:
            raise self._not_yet(model, timeout) from None
        return activation.instance_id

    def touch(self, instance_id: str) -> None:
        definition = self._store.by_instance(instance_id)
        if definition is not None:
            self._state.use(definition.name)
            self.metrics.hits.inc()

    def routable(self, instance_id: str) -> bool:
        """False while a registered model's engine sleeps or is being evicted (see :class:`RouteGate`)."""
        if self._state.is_closed(instance_id):
            return False
        definition = self._store.by_instance(instance_id)
        return definition is None or not is_asleep(definition, self.manager.find(instance_id))

    def activate(self, model: str, timeout: float) -> Activation:
        """:meth:`ensure_ready` for threads: wait up to ``timeout`` s for the model's engine."""
        flight = self._flight(model)
        try:
            return flight.result(timeout)
        except FutureTimeout:
            raise self._not_yet(model, timeout) from None

    def _flight(self, model: str) -> Future[Activation]:
        self._definition(model)  # UnknownModel before anything starts
        flight, new = self._state.flight(model, lambda started: self._pool.submit(self._bring_up, model, started))
        if new:
            flight.add_done_callback(lambda done, name=model: self._landed(name, done))
        return flight

    def _landed(self, model: str, flight: Future[Activation]) -> None:
        self._state.flight_ended(model, flight)
        error = None if flight.cancelled() else flight.exception()
        if error is not None:
            logger.warning("model %s could not be made ready: %s", model, error)

    def _not_yet(self, model: str, timeout: float) -> ModelUnavailable:
        state = self._state.busy(model) or self.state_of(model)[0]
        return ModelUnavailable(
            f"model {model!r} is {state} and was not ready within {timeout:g} s; retry later", self.eta(model)
        )

    def eta(self, model: str) -> float:
        """Seconds until the model is likely ready: its last start's duration less the time spent."""
        last = self._state.last(model)
        expected = last.seconds if last is not None and last.path != "running" else DEFAULT_ETA_S
        started = self._state.flight_started(model)
        spent = time.monotonic() - started if started is not None else 0.0
        return max(1.0, round(expected - spent, 1))

    # -- activation (on the pool's threads) ------------------------------------------------

    def _bring_up(self, name: str, asked_at: float) -> Activation:
        deadline = asked_at + self.settings.swap_ready_timeout
        with self._models.held(name):
            try:
                definition = self._definition(name)
                path = self._make_ready(definition, deadline)
                self._wait_running(definition, deadline)
            finally:
                self._state.clear_busy(name)
            activation = Activation(name, definition.instance_id, path, time.monotonic() - asked_at)
            self._state.use(name)  # under the model's lock: an unregister cannot slip in between
            if path != "running":
                self._state.landed(activation)
        if path != "running":
            self._transitions.event(definition, "ready", path=path, seconds=round(activation.seconds, 3))
            logger.info("model %s ready (%s) in %.2f s", name, path, activation.seconds)
        self.metrics.activated(path, activation.seconds)
        return activation

    def _make_ready(self, definition: ModelDefinition, deadline: float) -> str:
        """Start, wake or wait for the model's engine; returns the path taken (caller holds its lock)."""
        record = self._transitions.record(definition)
        state, _ = model_state(definition, record)
        if state == "running":
            return "running"
        if state == "starting":
            return self._start_path()
        if state == "stopping":
            self._wait_gone(definition, deadline)
        elif state == "failed":
            self._transitions.remove_instance(definition)
        asleep = record if state == "asleep" else None
        with self._evictor.room_for(definition, asleep, deadline, lambda: self.eta(definition.name)):
            if asleep is not None:
                self._transitions.wake(definition, asleep, self.eta(definition.name))
                return "woken"
            self._state.set_busy(definition.name, "starting")
            self._create(definition)
        return self._start_path()

    def _start_path(self) -> str:
        return "forked" if self.manager.deployer_name == "launcher" else "cold"

    def _create(self, definition: ModelDefinition) -> None:
        if definition.source == "launcher":
            request = LauncherRequest.model_validate(definition.request)
            self.manager.create_from_launcher(request, definition.instance_id)
        else:
            spec = DeploymentSpec.model_validate(definition.request)
            self.manager.create_from_spec(spec, shared_gpus=definition.shared_gpus)
        self._transitions.forget_sleep(definition)
        self._transitions.event(definition, "starting", deployer=self.manager.deployer_name)

    def _wait_running(self, definition: ModelDefinition, deadline: float) -> None:
        """Until the instance is ready: its readiness is checked every 50 ms, not each poll interval."""
        while True:
            record = self._transitions.record(definition)
            if record is None:
                raise ModelUnavailable(f"model {definition.name!r}: its instance was deleted while starting",
                                       DEFAULT_ETA_S)
            if record.state is InstanceState.RUNNING:
                return
            if self._stop.is_set():
                raise ModelUnavailable("the worker is shutting down", DEFAULT_ETA_S)
            if record.state.terminal or record.state is InstanceState.STOPPING:
                raise ModelUnavailable(f"model {definition.name!r} failed to start: {record.reason}; see "
                                       f"`berth logs {record.id}`", self.eta(definition.name))
            if time.monotonic() >= deadline:
                self._transitions.park(definition, "not ready within swap_ready_timeout")
                raise ModelUnavailable(
                    f"model {definition.name!r} was not ready within swap_ready_timeout "
                    f"({self.settings.swap_ready_timeout:g} s) and was parked; see `berth logs {record.id}`",
                    self.eta(definition.name))
            self.manager.refresh(record.id)
            if self._transitions.record(definition) == record:
                time.sleep(_READY_POLL_S)

    def _wait_gone(self, definition: ModelDefinition, deadline: float) -> None:
        try:
            wait_until(lambda: self._transitions.record(definition) is None,
                       timeout=max(0.0, deadline - time.monotonic()), interval=_READY_POLL_S,
                       what=f"model {definition.name!r} to stop")
        except WaitTimeout:
            raise ModelUnavailable(f"model {definition.name!r} is still stopping", self.eta(definition.name)) from None

    # -- the idle policy -------------------------------------------------------------------

    def _run_policy(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self.run_policy()
            except Exception:  # noqa: BLE001 - the policy must outlive any one bad round
                logger.exception("model swap policy round failed")

    def run_policy(self) -> None:
        """One round: sleep or park idle models, park models asleep too long, trim sleepers."""
        if self.manager.started:  # an app whose manager starts later (or has closed): not yet
            self._evictor.idle_round()

    # -- operations (the /v2/models API, on threads) -----------------------------------------

    @contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """The model's lock for an API operation. A start under way answers 409 at once (it may
        last ``swap_ready_timeout``); another operation is waited for, :data:`_OPERATION_WAIT_S` at most."""
        if self._state.busy(name) == "starting":
            raise ModelStateConflict(f"model {name!r} is starting; try again once it is running")
        if not self._models.acquire(name, timeout=_OPERATION_WAIT_S):
            raise ModelStateConflict(f"model {name!r} is {self._state.busy(name) or 'busy with another operation'}; "
                                     "try again in a moment")
        try:
            yield
        finally:
            self._models.release(name)

    def register(self, registration: ModelRegistration) -> ModelDefinition:
        definition = build_definition(registration, self.settings, self.manager.owner)
        if self.manager.find(definition.instance_id) is not None:
            raise InstanceConflict(f"instance_id: an instance named {definition.instance_id!r} exists already; "
                                   "choose another instance_id")
        definition = self.store.add(definition)
        self._state.use(definition.name)
        self._transitions.event(definition, "registered")
        if registration.start:
            self._flight(definition.name)
        return definition

    def unregister(self, name: str) -> ModelDefinition:
        """Park the model and forget its definition."""
        with self._operation(name):
            definition = self._definition(name)
            if self._transitions.record(definition) is not None:
                self._transitions.park(definition, "unregistered")
            self.store.remove(name)
            self._state.forget(name)
        self._transitions.event(definition, "removed")
        return definition

    def park(self, name: str) -> ModelDefinition:
        """Stop the model's engine, keep its definition (waits for an activation in progress, and
        up to ``swap_drain_timeout`` for the requests in flight)."""
        with self._operation(name):
            definition = self._definition(name)
            record = self._transitions.record(definition)
            if record is not None:
                with self._drained(definition, record) as undrained:
                    self._transitions.park(definition, "request", **undrained)
            return self._definition(name)

    @contextmanager
    def _drained(self, definition: ModelDefinition, record: InstanceRecord) -> Iterator[dict[str, str]]:
        """No new requests for the instance, and its requests in flight given time to finish; yields
        the event's note when they did not (the operation goes on: it was asked for)."""
        if record.state is not InstanceState.RUNNING or is_asleep(definition, record):
            with self._state.closed(definition.instance_id):
                yield {}
            return
        with self._transitions.gate_closed(definition, record, wait=True) as why:
            yield {} if why is None else {"undrained": why}

    def sleep(self, name: str, level: int | None = None) -> ModelDefinition:
        """Put the model's running engine to sleep at ``level`` (default: its sleep level)."""
        with self._operation(name):
            definition = self._definition(name)
            if not definition.can_sleep:
                raise ModelStateConflict(f"model {name!r} was registered without sleep_level, so its engine has no "
                                         "sleep mode; register it with sleep_level 1 or 2 (GPU engines only)")
            record = self._transitions.record(definition)
            state, _ = model_state(definition, record)
            if state != "running":
                raise ModelStateConflict(f"model {name!r} is {state}; only a running model can be put to sleep")
            assert record is not None
            with self._drained(definition, record) as undrained:
                level = level or definition.sleep_level
                slept = self._transitions.sleep(definition, record, level, "request", **undrained)
            if not slept:
                raise ModelUnavailable(f"model {name!r}: the engine refused to sleep; see `berth logs {record.id}`",
                                       DEFAULT_ETA_S)
            self._evictor.trim_sleepers()
            return self._definition(name)

    def pin(self, name: str, pinned: bool) -> ModelDefinition:
        with self._operation(name):
            definition = self.store.update(self._definition(name).name, pinned=pinned)
        self._transitions.event(definition, "pinned" if pinned else "unpinned")
        return definition

    # -- views ---------------------------------------------------------------------------

    def definitions(self) -> list[ModelDefinition]:
        return self.store.all()

    def get(self, name: str) -> ModelDefinition:
        return self._definition(name)

    def state_of(self, name: str) -> tuple[str, str]:
        definition = self._definition(name)
        return model_state(definition, self._transitions.record(definition))

    def view(self, definition: ModelDefinition) -> dict[str, Any]:
        """What the API shows of a model (its request's secrets masked)."""
        last = self._state.last(definition.name)
        record = self._transitions.record(definition)
        return model_view(definition, record, transition=self._state.busy(definition.name),
                          last_used=self._state.last_used(definition.name),
                          last_path=last.path if last is not None else None,
                          last_seconds=last.seconds if last is not None else None)

    # -- helpers -------------------------------------------------------------------------

    def _definition(self, name: str) -> ModelDefinition:
        definition = self._store.get(name)
        if definition is None:
            raise UnknownModel(f"model {name[:200]!r} is not registered on this worker; see GET /v2/models")
        return definition

    def _states(self) -> list[str]:
        if not self._store.opened:
            return []
        records = {record.id: record for record in self.manager.list()}
        return [model_state(d, records.get(d.instance_id))[0] for d in self._store.all()]

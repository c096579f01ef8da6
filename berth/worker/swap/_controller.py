"""``SwapController``: registered models started, woken, put to sleep and parked on demand.

It is the worker's :class:`~berth.worker.activation.ModelActivator`: the inference router asks
it for a model no running instance serves, and it makes one ready. As a
:class:`~berth.worker.activation.RouteGate` it tells the router which running instances must not
get new requests: sleeping engines, and engines being evicted.

* **Single flight.** Every request for one model joins the one activation in progress; the
  activation runs on a thread of its own and goes on when a requester stops waiting, so a retry
  finds the engine ready (or closer to it).
* **One operation per model.** Activations, parks and sleeps of one model never overlap (a lock
  per model name); different models proceed side by side, except that budget decisions and the
  starts they allow are made one at a time.
* **Budget.** With ``swap_max_engines`` (engines per worker) or ``swap_gpu_memory_gib``
  (accelerator memory per GPU) set, starting or waking one more engine first evicts the least
  recently used unpinned running models (on its GPUs, for memory): to sleep where registered with
  a sleep level, else parked. An engine being evicted takes no new requests and finishes those in
  flight first (none routed to it in the last half second, vLLM reporting none running or
  waiting); one that does not drain in time is skipped, and when nothing can be freed the
  request gets 503 with ``Retry-After``.
* **Idle.** A thread parks (or puts to sleep) models unused for their idle timeout, and parks
  models asleep for ``swap_asleep_timeout``.

Every change is an event in the worker's watch stream (``type`` ``model.<what>``) and counted
in the metrics of :mod:`berth.worker.swap.metrics`.
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
from dataclasses import dataclass
from typing import Any

from berth.schemas import DeploymentSpec
from berth.worker.reconcile import OpLocks
from berth.worker.admission import Holdings
from berth.worker.routing import ModelUnavailable, UnknownModel
from berth.worker.errors import InstanceConflict, InstanceNotFound, WorkerError
from berth.worker.admission import LauncherRequest
from berth.worker.store import InstanceRecord
from berth.worker.instances import ServeManager
from berth.worker.store import InstanceState
from berth.worker.swap._definitions import DefinitionStore, ModelDefinition
from berth.worker.swap._engine import EngineControl, EngineError
from berth.worker.swap._metrics import SwapMetrics
from berth.worker.swap._policy import (
    Candidate,
    Eviction,
    awake_engines,
    eviction_for,
    gpu_usage,
    idle_action,
    is_asleep,
    lru,
    model_state,
)
from berth.worker.swap._registration import ModelRegistration, build_definition, predicted_gpus
from berth.worker.swap._views import model_view


logger = logging.getLogger(__name__)

#: a request routed this recently may still be on its way to the engine: do not evict under it
IN_TRANSIT_S = 0.5
_READY_POLL_S = 0.05
_DRAIN_POLL_S = 0.2
_DEFAULT_ETA_S = 10.0
#: How long an API operation waits for another operation on the same model (not for a start).
_OPERATION_WAIT_S = 10.0


class ModelStateConflict(WorkerError):
    """The model is not in a state the operation applies to (the message says which it is in)."""

    status_code = 409


@dataclass(frozen=True, slots=True)
class Activation:
    """An activation's outcome: the instance that serves, how it got there, and how long it took."""

    model: str
    instance_id: str
    path: str
    seconds: float


class SwapController:
    """Construct (no I/O), :meth:`start` after the manager has started, use, :meth:`close`."""

    def __init__(self, manager: ServeManager, *, engine: EngineControl | None = None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self._engine = engine or EngineControl(probe_timeout=self.settings.probe_timeout)
        self._store: DefinitionStore | None = None
        self._models = OpLocks()  # one operation per model name
        self._room = threading.Lock()  # budget decisions and the starts they allow
        self._flights: dict[str, Future[Activation]] = {}
        self._flight_started: dict[str, float] = {}
        self._flights_lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="berth-swap")
        self._used: dict[str, float] = {}  # model -> last request (time.time)
        self._last: dict[str, Activation] = {}  # model -> its last activation
        self._busy: dict[str, str] = {}  # model -> transition under way
        self._closed: set[str] = set()  # instance ids being evicted: no new requests
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics = SwapMetrics.of(manager.metrics.registry, self._states)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, policy: bool = True) -> SwapController:
        """Open the definitions and start the idle policy's thread (``policy=False``: tests tick it)."""
        self._store = DefinitionStore(self.settings.data_dir).open()
        self._stop = threading.Event()  # a closed controller may be started again (a new lifespan)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="berth-swap")
        self._engine.open()
        now = time.time()
        self._used = {d.name: now for d in self._store.all()}  # a restart counts as a use
        if policy:
            self._thread = threading.Thread(target=self._run_policy, name="berth-swap-policy", daemon=True)
            self._thread.start()
        logger.info("model swapping: %d models registered", len(self._used))
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._engine.close()
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> DefinitionStore:
        if self._store is None:
            raise RuntimeError("SwapController.start() has not been called")
        return self._store

    # -- the activator (the inference router's side) ---------------------------------------

    async def ensure_ready(self, model: str, timeout: float) -> str:
        flight = self._flight(model)
        try:
            activation = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(flight)), timeout)
        except TimeoutError:
            raise self._not_yet(model, timeout) from None
        return activation.instance_id

    def touch(self, instance_id: str) -> None:
        definition = self.store.by_instance(instance_id)
        if definition is not None:
            self._used[definition.name] = time.time()
            self.metrics.hits.inc()

    def routable(self, instance_id: str) -> bool:
        """False while a registered model's engine sleeps or is being evicted (see :class:`RouteGate`)."""
        if instance_id in self._closed:
            return False
        definition = self.store.by_instance(instance_id)
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
        with self._flights_lock:
            flight = self._flights.get(model)
            if flight is None:
                self._flight_started[model] = time.monotonic()
                flight = self._pool.submit(self._bring_up, model, time.monotonic())
                self._flights[model] = flight
                flight.add_done_callback(lambda done, name=model: self._landed(name, done))
            return flight

    def _landed(self, model: str, flight: Future[Activation]) -> None:
        with self._flights_lock:
            if self._flights.get(model) is flight:
                del self._flights[model]
        error = None if flight.cancelled() else flight.exception()
        if error is not None:
            logger.warning("model %s could not be made ready: %s", model, error)

    def _not_yet(self, model: str, timeout: float) -> ModelUnavailable:
        state = self._busy.get(model) or self.state_of(model)[0]
        return ModelUnavailable(
            f"model {model!r} is {state} and was not ready within {timeout:g} s; retry later", self.eta(model)
        )

    def eta(self, model: str) -> float:
        """Seconds until the model is likely ready: its last start's duration less the time spent."""
        last = self._last.get(model)
        expected = last.seconds if last is not None and last.path != "running" else _DEFAULT_ETA_S
        with self._flights_lock:
            started = self._flight_started.get(model) if model in self._flights else None
        spent = time.monotonic() - started if started is not None else 0.0
        return max(1.0, round(expected - spent, 1))

    @contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """The model's lock for an API operation. A start under way answers 409 at once (it may
        last ``swap_ready_timeout``); another operation is waited for, :data:`_OPERATION_WAIT_S` at most."""
        if self._busy.get(name) == "starting":
            raise ModelStateConflict(f"model {name!r} is starting; try again once it is running")
        if not self._models.acquire(name, timeout=_OPERATION_WAIT_S):
            raise ModelStateConflict(f"model {name!r} is {self._busy.get(name, 'busy with another operation')}; "
                                     "try again in a moment")
        try:
            yield
        finally:
            self._models.release(name)

    # -- activation (on the pool's threads) ------------------------------------------------

    def _bring_up(self, name: str, asked_at: float) -> Activation:
        deadline = asked_at + self.settings.swap_ready_timeout
        with self._models.held(name):
            try:
                definition = self._definition(name)
                path = self._make_ready(definition, deadline)
                self._wait_running(definition, deadline)
            finally:
                self._busy.pop(name, None)
        activation = Activation(name, definition.instance_id, path, time.monotonic() - asked_at)
        self._used[name] = time.time()
        if path != "running":
            self._last[name] = activation
            self._event(definition, "ready", path=path, seconds=round(activation.seconds, 3))
            logger.info("model %s ready (%s) in %.2f s", name, path, activation.seconds)
        self.metrics.activated(path, activation.seconds)
        return activation

    def _make_ready(self, definition: ModelDefinition, deadline: float) -> str:
        """Start, wake or wait for the model's engine; returns the path taken (caller holds its lock)."""
        record = self._record(definition)
        state, _ = model_state(definition, record)
        if state == "running":
            return "running"
        if state == "starting":
            return self._start_path()
        if state == "stopping":
            self._wait_gone(definition, deadline)
        elif state == "failed":
            self._remove_instance(definition)
        with self._room:
            self._make_room(definition, record if state == "asleep" else None)
            if state == "asleep":
                assert record is not None
                self._wake(definition, record)
                return "woken"
            self._busy[definition.name] = "starting"
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
        self._forget_sleep(definition)
        self._event(definition, "starting", deployer=self.manager.deployer_name)

    def _wake(self, definition: ModelDefinition, record: InstanceRecord) -> None:
        self._busy[definition.name] = "waking"
        try:
            self._engine.wake(_base_url(record), definition.asleep_level or definition.sleep_level)
        except EngineError as exc:
            raise ModelUnavailable(f"model {definition.name!r} could not be woken: {exc}", self.eta(definition.name)) from exc
        self._forget_sleep(definition)

    def _wait_running(self, definition: ModelDefinition, deadline: float) -> None:
        """Until the instance is ready: its readiness is checked every 50 ms, not each poll interval."""
        while True:
            record = self._record(definition)
            if record is None:
                raise ModelUnavailable(f"model {definition.name!r}: its instance was deleted while starting",
                                       _DEFAULT_ETA_S)
            if record.state is InstanceState.RUNNING:
                return
            if self._stop.is_set():
                raise ModelUnavailable("the worker is shutting down", _DEFAULT_ETA_S)
            if record.state.terminal or record.state is InstanceState.STOPPING:
                raise ModelUnavailable(f"model {definition.name!r} failed to start: {record.reason}; see "
                                       f"`berth logs {record.id}`", self.eta(definition.name))
            if time.monotonic() >= deadline:
                self._park(definition, "not ready within swap_ready_timeout")
                raise ModelUnavailable(
                    f"model {definition.name!r} was not ready within swap_ready_timeout "
                    f"({self.settings.swap_ready_timeout:g} s) and was parked; see `berth logs {record.id}`",
                    self.eta(definition.name))
            self.manager.refresh(record.id)
            if self._record(definition) == record:
                time.sleep(_READY_POLL_S)

    def _wait_gone(self, definition: ModelDefinition, deadline: float) -> None:
        while self._record(definition) is not None:
            if time.monotonic() >= deadline:
                raise ModelUnavailable(f"model {definition.name!r} is still stopping", self.eta(definition.name))
            time.sleep(_READY_POLL_S)

    def _remove_instance(self, definition: ModelDefinition) -> None:
        try:
            self.manager.delete(definition.instance_id)
        except InstanceNotFound:
            pass

    # -- the budget --------------------------------------------------------------------------

    def _make_room(self, definition: ModelDefinition, record: InstanceRecord | None) -> None:
        """Evict least recently used models until one more engine fits both budgets (caller holds ``_room``)."""
        self._fit_count(definition)
        self._fit_memory(definition, record)
        self._trim_sleepers()

    def _fit_count(self, definition: ModelDefinition) -> None:
        limit = self.settings.swap_max_engines
        if limit is None:
            return
        records = self.manager.list()
        need = awake_engines(records, self._by_instance()) + 1 - limit
        for candidate in lru(self._candidates(records, exclude=definition.name)):
            if need <= 0:
                break
            if self._evict(candidate.definition.name, "budget", wait=True):
                need -= 1
        if need > 0:
            raise ModelUnavailable(
                f"model {definition.name!r} cannot start: the budget of {limit} engines (swap_max_engines) is held "
                "by pinned models, models starting or engines still serving requests", self.eta(definition.name))

    def _fit_memory(self, definition: ModelDefinition, record: InstanceRecord | None) -> None:
        budget, need = self.settings.swap_gpu_memory_gib, definition.gpu_memory_gib
        if budget is None or not need:
            return
        records = self.manager.list()
        gpus = record.gpus if record is not None else predicted_gpus(definition, self.settings, Holdings.of(records))
        for gpu in gpus:
            self._fit_gpu(definition, gpu, need, budget)

    def _fit_gpu(self, definition: ModelDefinition, gpu: int, need: float, budget: float) -> None:
        """Evict models on ``gpu``, least recently used first, until ``need`` GiB more fit in ``budget``."""
        if need > budget:
            raise ModelStateConflict(
                f"model {definition.name!r} needs {need:g} GiB per GPU (gpu_memory_gib), more than the whole "
                f"{budget:g} GiB budget (swap_gpu_memory_gib); lower its gpu_memory_gib or raise the budget")
        while True:
            records = self.manager.list()
            used = gpu_usage(records, self._by_instance()).get(gpu, 0.0)
            if used + need <= budget:
                return
            gpus_of = {r.id: r.gpus for r in records}
            on_gpu = [c for c in lru(self._candidates(records, exclude=definition.name))
                      if gpu in gpus_of.get(c.definition.instance_id, [])]
            if not any(self._evict(c.definition.name, "budget", wait=True) for c in on_gpu):
                raise ModelUnavailable(
                    f"model {definition.name!r} needs {need:g} GiB on GPU {gpu}, where {used:g} of the "
                    f"{budget:g} GiB budget (swap_gpu_memory_gib) is held by pinned models, models starting or "
                    "engines still serving requests", self.eta(definition.name))

    def _candidates(self, records: list[InstanceRecord], *, exclude: str) -> list[Candidate]:
        by_id = {record.id: record for record in records}
        found = []
        for definition in self.store.all():
            record = by_id.get(definition.instance_id)
            if definition.name == exclude or model_state(definition, record)[0] != "running":
                continue
            found.append(Candidate(definition, False, self._used.get(definition.name, 0.0)))
        return found

    def _evict(self, name: str, reason: str, *, wait: bool, action: Eviction | None = None) -> bool:
        """Sleep or park a running model that no request uses; False when it is busy or changed."""
        if not self._models.acquire(name, blocking=False):
            return False
        try:
            definition = self.store.get(name)
            record = self._record(definition) if definition is not None else None
            if definition is None or record is None or model_state(definition, record)[0] != "running":
                return False
            if definition.pinned:
                return False
            self._closed.add(definition.instance_id)  # new requests go to ensure_ready from now on
            try:
                if not self._drained(definition, record, wait=wait):
                    return False
                self._evict_now(definition, record, action or eviction_for(definition, asleep=False), reason)
            finally:
                self._closed.discard(definition.instance_id)
            return True
        finally:
            self._models.release(name)

    def _evict_now(self, definition: ModelDefinition, record: InstanceRecord, action: Eviction, reason: str) -> None:
        if action == "sleep" and self._sleep(definition, record, definition.sleep_level, reason):
            self.metrics.evictions.labels(action="sleep", reason=reason).inc()
            return
        self._park(definition, reason)
        self.metrics.evictions.labels(action="park", reason=reason).inc()

    def _drained(self, definition: ModelDefinition, record: InstanceRecord, *, wait: bool) -> bool:
        """No request in flight (waiting up to ``swap_drain_timeout`` when ``wait``)."""
        deadline = time.monotonic() + (self.settings.swap_drain_timeout if wait else 0.0)
        while True:
            quiet = time.time() - self._used.get(definition.name, 0.0) >= IN_TRANSIT_S
            if quiet and not self._engine.in_flight(_base_url(record)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_DRAIN_POLL_S)

    def _trim_sleepers(self) -> None:
        """Park the longest-unused sleeping models beyond ``swap_max_asleep``."""
        limit = self.settings.swap_max_asleep
        if limit is None:
            return
        records = {record.id: record for record in self.manager.list()}
        sleepers = [Candidate(d, True, self._used.get(d.name, 0.0)) for d in self.store.all()
                    if is_asleep(d, records.get(d.instance_id))]
        for candidate in lru(sleepers)[: max(0, len(sleepers) - limit)]:
            name = candidate.definition.name
            if self._models.acquire(name, blocking=False):
                try:
                    self._park(candidate.definition, "budget")
                    self.metrics.evictions.labels(action="park", reason="budget").inc()
                finally:
                    self._models.release(name)

    # -- sleep and park (caller holds the model's lock) ------------------------------------

    def _sleep(self, definition: ModelDefinition, record: InstanceRecord, level: int, reason: str) -> bool:
        self._busy[definition.name] = "sleeping"
        try:
            self._engine.sleep(_base_url(record), level)
        except EngineError as exc:
            logger.warning("model %s could not be put to sleep (%s); parking it instead", definition.name, exc)
            return False
        finally:
            self._busy.pop(definition.name, None)
        self.store.update(definition.name, asleep_since=time.time(), asleep_level=level)
        self._event(definition, "asleep", level=level, reason=reason)
        logger.info("model %s asleep at level %d (%s)", definition.name, level, reason)
        return True

    def _park(self, definition: ModelDefinition, reason: str) -> None:
        self._busy[definition.name] = "parking"
        started = time.monotonic()
        try:
            self._remove_instance(definition)
        finally:
            self._busy.pop(definition.name, None)
        seconds = time.monotonic() - started
        self._forget_sleep(definition)
        self._event(definition, "parked", reason=reason, seconds=round(seconds, 3))
        logger.info("model %s parked (%s) in %.2f s", definition.name, reason, seconds)

    def _forget_sleep(self, definition: ModelDefinition) -> None:
        if self.store.get(definition.name) is not None:
            self.store.update(definition.name, asleep_since=None, asleep_level=0)

    # -- the idle policy -------------------------------------------------------------------

    def _run_policy(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self.run_policy()
            except Exception:  # noqa: BLE001 - the policy must outlive any one bad round
                logger.exception("model swap policy round failed")

    def run_policy(self) -> None:
        """One round: sleep or park idle models, park models asleep too long, trim sleepers."""
        if not self.manager.started:  # an app whose manager starts later (or has closed)
            return
        now = time.time()
        records = {record.id: record for record in self.manager.list()}
        for definition in self.store.all():
            state, _ = model_state(definition, records.get(definition.instance_id))
            action = idle_action(definition, state, now=now, last_used=self._used.get(definition.name, now),
                                 idle_timeout=self.settings.swap_idle_timeout,
                                 asleep_timeout=self.settings.swap_asleep_timeout)
            if action is None:
                continue
            if state == "running":
                self._evict(definition.name, "idle", wait=False, action=action)
            elif self._models.acquire(definition.name, blocking=False):
                try:
                    self._park(definition, "idle")
                    self.metrics.evictions.labels(action="park", reason="idle").inc()
                finally:
                    self._models.release(definition.name)
        self._trim_sleepers()

    # -- operations (the /v2/models API) ---------------------------------------------------

    def register(self, registration: ModelRegistration) -> ModelDefinition:
        definition = build_definition(registration, self.settings, self.manager.owner)
        if self.manager.find(definition.instance_id) is not None:
            raise InstanceConflict(f"instance_id: an instance named {definition.instance_id!r} exists already; "
                                   "choose another instance_id")
        definition = self.store.add(definition)
        self._used[definition.name] = time.time()
        self._event(definition, "registered")
        if registration.start:
            self._flight(definition.name)
        return definition

    def unregister(self, name: str) -> ModelDefinition:
        """Park the model and forget its definition."""
        with self._operation(name):
            definition = self._definition(name)
            if self._record(definition) is not None:
                self._park(definition, "unregistered")
            self.store.remove(name)
            self._used.pop(name, None)
        self._event(definition, "removed")
        return definition

    def park(self, name: str) -> ModelDefinition:
        """Stop the model's engine, keep its definition (waits for an activation in progress, and
        up to ``swap_drain_timeout`` for the requests in flight)."""
        with self._operation(name):
            definition = self._definition(name)
            record = self._record(definition)
            if record is not None:
                with self._gate_closed(definition, record):
                    self._park(definition, "request")
            return self._definition(name)

    @contextmanager
    def _gate_closed(self, definition: ModelDefinition, record: InstanceRecord) -> Iterator[None]:
        """No new requests for the instance, and its requests in flight given time to finish."""
        self._closed.add(definition.instance_id)
        try:
            if record.state is InstanceState.RUNNING and not is_asleep(definition, record):
                self._drained(definition, record, wait=True)
            yield
        finally:
            self._closed.discard(definition.instance_id)

    def sleep(self, name: str, level: int | None = None) -> ModelDefinition:
        """Put the model's running engine to sleep at ``level`` (default: its sleep level)."""
        with self._operation(name):
            definition = self._definition(name)
            if not definition.can_sleep:
                raise ModelStateConflict(f"model {name!r} was registered without sleep_level, so its engine has no "
                                         "sleep mode; register it with sleep_level 1 or 2 (GPU engines only)")
            record = self._record(definition)
            state, _ = model_state(definition, record)
            if state != "running":
                raise ModelStateConflict(f"model {name!r} is {state}; only a running model can be put to sleep")
            assert record is not None
            with self._gate_closed(definition, record):
                slept = self._sleep(definition, record, level or definition.sleep_level, "request")
            if not slept:
                raise ModelUnavailable(f"model {name!r}: the engine refused to sleep; see `berth logs {record.id}`",
                                       _DEFAULT_ETA_S)
            self._trim_sleepers()
            return self._definition(name)

    def pin(self, name: str, pinned: bool) -> ModelDefinition:
        with self._operation(name):
            definition = self.store.update(self._definition(name).name, pinned=pinned)
        self._event(definition, "pinned" if pinned else "unpinned")
        return definition

    # -- views ---------------------------------------------------------------------------

    def definitions(self) -> list[ModelDefinition]:
        return self.store.all()

    def get(self, name: str) -> ModelDefinition:
        return self._definition(name)

    def state_of(self, name: str) -> tuple[str, str]:
        definition = self._definition(name)
        return model_state(definition, self._record(definition))

    def view(self, definition: ModelDefinition) -> dict[str, Any]:
        """What the API shows of a model (its request's secrets masked)."""
        record = self._record(definition)
        return model_view(definition, record, transition=self._busy.get(definition.name),
                          last_used=self._used.get(definition.name), last=self._last.get(definition.name))

    # -- helpers -------------------------------------------------------------------------

    def _definition(self, name: str) -> ModelDefinition:
        definition = self.store.get(name)
        if definition is None:
            raise UnknownModel(f"model {name[:200]!r} is not registered on this worker; see GET /v2/models")
        return definition

    def _record(self, definition: ModelDefinition) -> InstanceRecord | None:
        """The model's instance; None when none runs under its id, or another model's does (created
        through another API: never taken for this model, and a start then answers 409)."""
        record = self.manager.find(definition.instance_id)
        names = list(record.endpoints.served_names) if record is not None else None
        return None if record is None or (names and definition.name not in names) else record

    def _by_instance(self) -> dict[str, ModelDefinition]:
        return {d.instance_id: d for d in self.store.all()}

    def _states(self) -> list[str]:
        if self._store is None:
            return []
        records = {record.id: record for record in self.manager.list()}
        return [model_state(d, records.get(d.instance_id))[0] for d in self._store.all()]

    def _event(self, definition: ModelDefinition, what: str, **data: Any) -> None:
        record = self._record(definition)
        state, reason = model_state(definition, record) if self.store.get(definition.name) else ("removed", "")
        body = {"model": definition.name, "instance_id": definition.instance_id, "state": state,
                "reason": reason, **data}
        self.manager.note(definition.instance_id, f"model.{what}", body)


def _base_url(record: InstanceRecord) -> str:
    base_url = record.endpoints.base_url
    if not base_url:
        raise ModelUnavailable(f"instance {record.id!r} serves no HTTP endpoint", _DEFAULT_ETA_S)
    return str(base_url)

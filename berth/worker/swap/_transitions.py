"""One model's engine put to sleep, woken, parked or evicted, and the drain an eviction waits for.

These run on the pool's and the policy's threads, never on the event loop. The caller holds the
model's lock (one operation per model), except for :meth:`Transitions.evict` and
:meth:`Transitions.park_if_free`, which take it themselves without waiting. No other lock is held
while they talk to an engine, wait for a drain or stop an instance.

An engine is *drained* when no request was routed to it in the last :data:`IN_TRANSIT_S` and
vLLM reports none running or waiting. Metrics that cannot be read (``/metrics`` failing or timing
out) prove nothing, so such an engine is not drained: an eviction waits, at most
``swap_drain_timeout``, and then says why it did not happen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from berth.utils.waiting import WaitTimeout, wait_until
from berth.worker.errors import InstanceNotFound
from berth.worker.instances import ServeManager
from berth.worker.reconcile import OpLocks
from berth.worker.routing import ModelUnavailable
from berth.worker.settings import Settings
from berth.worker.store import InstanceRecord
from berth.worker.swap._definitions import DefinitionStore, ModelDefinition
from berth.worker.swap._engine import EngineControl, EngineError
from berth.worker.swap._metrics import SwapMetrics
from berth.worker.swap._policy import Eviction, eviction_for, model_state
from berth.worker.swap._state import SwapState

logger = logging.getLogger(__name__)

#: a request routed this recently may still be on its way to the engine: do not evict under it
IN_TRANSIT_S = 0.5
_DRAIN_POLL_S = 0.2
DEFAULT_ETA_S = 10.0


class Transitions:
    """The controller's hands on one model's engine (see the module's docstring for the locks)."""

    def __init__(self, manager: ServeManager, store: DefinitionStore, engine: EngineControl, state: SwapState,
                 models: OpLocks, metrics: SwapMetrics) -> None:
        self.manager = manager
        self.store = store
        self.engine = engine
        self.state = state
        self.models = models  # one operation per model name
        self.metrics = metrics

    @property
    def settings(self) -> Settings:
        return self.manager.settings

    # -- reading ---------------------------------------------------------------------------

    def record(self, definition: ModelDefinition) -> InstanceRecord | None:
        """The model's instance; None when none runs under its id, or another model's does (created
        through another API: never taken for this model, and a start then answers 409)."""
        record = self.manager.find(definition.instance_id)
        names = list(record.endpoints.served_names) if record is not None else None
        return None if record is None or (names and definition.name not in names) else record

    def by_instance(self) -> dict[str, ModelDefinition]:
        return {d.instance_id: d for d in self.store.all()}

    def event(self, definition: ModelDefinition, what: str, **data: Any) -> None:
        record = self.record(definition)
        state, reason = model_state(definition, record) if self.store.get(definition.name) else ("removed", "")
        body = {"model": definition.name, "instance_id": definition.instance_id, "state": state,
                "reason": reason, **data}
        self.manager.note(definition.instance_id, f"model.{what}", body)

    # -- draining --------------------------------------------------------------------------

    def drained(self, definition: ModelDefinition, record: InstanceRecord, *, wait: bool) -> str | None:
        """None once no request is in flight (waiting up to ``swap_drain_timeout`` when ``wait``),
        else why the engine is not known to be drained."""
        timeout = self.settings.swap_drain_timeout if wait else 0.0
        try:
            wait_until(lambda: self._in_flight(definition, record), done=lambda why: why is None,
                       timeout=timeout, interval=_DRAIN_POLL_S, what=f"model {definition.name!r} to drain")
        except WaitTimeout as exc:
            return f"{exc.last} (waited {timeout:g} s, swap_drain_timeout)" if wait else exc.last
        return None

    def _in_flight(self, definition: ModelDefinition, record: InstanceRecord) -> str | None:
        if time.time() - self.state.used_at(definition.name) < IN_TRANSIT_S:
            return f"a request was routed to it less than {IN_TRANSIT_S:g} s ago"
        count = self.engine.in_flight(base_url(record))
        if count is None:
            return ("its engine's metrics could not be read (GET /metrics failed or timed out): "
                    "requests may be in flight")
        return f"{count} requests are still in flight" if count else None

    @contextmanager
    def gate_closed(self, definition: ModelDefinition, record: InstanceRecord, *, wait: bool) -> Iterator[str | None]:
        """No new requests for the instance while the block runs; yields why it did not drain (None: it did)."""
        with self.state.closed(definition.instance_id):
            yield self.drained(definition, record, wait=wait)

    # -- evicting --------------------------------------------------------------------------

    def evict(self, name: str, reason: str, *, wait: bool, action: Eviction | None = None) -> str | None:
        """Sleep or park a running unpinned model that no request uses; None when done, else why not."""
        if not self.models.acquire(name, blocking=False):
            return "another operation on it is under way"
        try:
            definition = self.store.get(name)
            record = self.record(definition) if definition is not None else None
            if definition is None or record is None or model_state(definition, record)[0] != "running":
                return "it is not running"
            if definition.pinned:
                return "it is pinned"
            return self._evict_drained(definition, record, reason, wait=wait, action=action)
        finally:
            self.models.release(name)

    def _evict_drained(self, definition: ModelDefinition, record: InstanceRecord, reason: str, *, wait: bool,
                       action: Eviction | None) -> str | None:
        with self.gate_closed(definition, record, wait=wait) as why:
            if why is not None:
                self._not_evicted(definition, reason, why, wait=wait)
                return why
            self._evict_now(definition, record, action or eviction_for(definition, asleep=False), reason)
        return None

    def _not_evicted(self, definition: ModelDefinition, reason: str, why: str, *, wait: bool) -> None:
        if wait:  # the idle policy's rounds would repeat the event every poll interval
            self.event(definition, "eviction_skipped", reason=reason, why=why)
        level = logging.INFO if wait else logging.DEBUG
        logger.log(level, "model %s not evicted (%s): %s", definition.name, reason, why)

    def _evict_now(self, definition: ModelDefinition, record: InstanceRecord, action: Eviction, reason: str) -> None:
        if action == "sleep" and self.sleep(definition, record, definition.sleep_level, reason):
            self.metrics.evictions.labels(action="sleep", reason=reason).inc()
            return
        self.park(definition, reason)
        self.metrics.evictions.labels(action="park", reason=reason).inc()

    def park_if_free(self, definition: ModelDefinition, reason: str) -> bool:
        """Park a model no operation holds (a sleeper, or an idle one); False when one does."""
        if not self.models.acquire(definition.name, blocking=False):
            return False
        try:
            self.park(definition, reason)
            self.metrics.evictions.labels(action="park", reason=reason).inc()
            return True
        finally:
            self.models.release(definition.name)

    # -- sleep, wake and park (caller holds the model's lock) ------------------------------

    def sleep(self, definition: ModelDefinition, record: InstanceRecord, level: int, reason: str,
              **data: Any) -> bool:
        try:
            with self.state.transition(definition.name, "sleeping"):
                self.engine.sleep(base_url(record), level)
        except EngineError as exc:
            logger.warning("model %s could not be put to sleep (%s); parking it instead", definition.name, exc)
            return False
        self.store.update(definition.name, asleep_since=time.time(), asleep_level=level)
        self.event(definition, "asleep", level=level, reason=reason, **data)
        logger.info("model %s asleep at level %d (%s)", definition.name, level, reason)
        return True

    def wake(self, definition: ModelDefinition, record: InstanceRecord, eta: float) -> None:
        """Wake the model's sleeping engine; its transition (``waking``) is left for the caller to clear."""
        self.state.set_busy(definition.name, "waking")
        try:
            self.engine.wake(base_url(record), definition.asleep_level or definition.sleep_level)
        except EngineError as exc:
            raise ModelUnavailable(f"model {definition.name!r} could not be woken: {exc}", eta) from exc
        self.forget_sleep(definition)

    def park(self, definition: ModelDefinition, reason: str, **data: Any) -> None:
        started = time.monotonic()
        with self.state.transition(definition.name, "parking"):
            self.remove_instance(definition)
        seconds = time.monotonic() - started
        self.forget_sleep(definition)
        self.event(definition, "parked", reason=reason, seconds=round(seconds, 3), **data)
        logger.info("model %s parked (%s) in %.2f s", definition.name, reason, seconds)

    def remove_instance(self, definition: ModelDefinition) -> None:
        try:
            self.manager.delete(definition.instance_id)
        except InstanceNotFound:
            pass

    def forget_sleep(self, definition: ModelDefinition) -> None:
        if self.store.get(definition.name) is not None:
            self.store.update(definition.name, asleep_since=None, asleep_level=0)


def base_url(record: InstanceRecord) -> str:
    url = record.endpoints.base_url
    if not url:
        raise ModelUnavailable(f"instance {record.id!r} serves no HTTP endpoint", DEFAULT_ETA_S)
    return str(url)

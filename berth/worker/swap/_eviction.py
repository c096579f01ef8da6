"""Who gives way, and when: room for one more engine under the budgets, the idle round, and the
cap on sleeping engines.

**Room without a lock across I/O.** Budget decisions are made one at a time under ``_room``,
which is held only while reading in-memory state (the registry's copy, the definitions' copy)
and never across a drain, a sleep, a stop or a start. A plan either *grants* the start (or
wake) or names *victims*; victims are evicted with the lock released, and the plan is made
again, until it grants or nothing more can be freed.

**The budget invariant.** Never more engines than ``swap_max_engines``, nor more than
``swap_gpu_memory_gib`` per GPU: a plan counts every awake engine, plus each engine picked for
eviction until its eviction is over (it holds the accelerator until it is stopped or asleep),
plus each start granted whose engine the registry does not count yet. A grant is dropped only
after the start's record exists (or the woken engine is no longer asleep), so at every moment
each engine is counted at least once; two plans never grant the same room, since each sees the
other's grant. Victims picked by one plan are not picked by another.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from berth.worker.routing import ModelUnavailable
from berth.worker.store import InstanceRecord
from berth.worker.swap._definitions import ModelDefinition
from berth.worker.swap._errors import ModelStateConflict
from berth.worker.swap._policy import (
    Candidate,
    awake_ids,
    gpu_usage,
    idle_action,
    is_asleep,
    lru,
    model_state,
)
from berth.worker.swap._registration import predicted_gpus
from berth.worker.swap._transitions import Transitions

_HELD = "is held by pinned models, models starting or engines still serving requests"


@dataclass(frozen=True, slots=True)
class _Grant:
    """A start or wake allowed by a plan, counted until the registry counts its engine."""

    gpus: tuple[int, ...]
    gib: float


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one plan reads (under ``_room``)."""

    records: list[InstanceRecord]
    definitions: dict[str, ModelDefinition]  # by instance id
    awake: set[str]  # instance ids of awake engines


class Evictor:
    """The budget and idle policy over :class:`Transitions` (see the module's docstring)."""

    def __init__(self, transitions: Transitions) -> None:
        self._transitions = transitions
        self._room = threading.Lock()  # plans: in-memory reads only, never held across I/O
        self._granted: dict[str, _Grant] = {}  # instance id -> a start or wake not yet counted
        self._evicting: set[str] = set()  # instance ids picked for eviction, until it is over

    # -- room for one more engine ------------------------------------------------------------

    @contextmanager
    def room_for(self, definition: ModelDefinition, record: InstanceRecord | None, deadline: float,
                 eta: Callable[[], float]) -> Iterator[None]:
        """Evict least recently used models until one more engine fits both budgets, then hold
        that room while the block starts (or, with ``record``, wakes) the model's engine."""
        self._reserve(definition, record, deadline, eta)
        try:
            self.trim_sleepers()
            yield
        finally:
            with self._room:
                self._granted.pop(definition.instance_id, None)

    def _reserve(self, definition: ModelDefinition, record: InstanceRecord | None, deadline: float,
                 eta: Callable[[], float]) -> None:
        """Plan, evict, plan again, until a plan grants the room; past ``deadline`` (after the first
        round of evictions) a model evicted once may have been started again meanwhile: give up."""
        refused: dict[str, str] = {}  # model -> why it was not evicted
        for round_ in itertools.count():
            with self._room:
                victims = self._plan(definition, record, refused, eta)
            if not victims:
                return
            if round_ and time.monotonic() >= deadline:
                self._unclaim(victims)
                raise ModelUnavailable(f"model {definition.name!r}: no room was made for its engine within "
                                       f"swap_ready_timeout{_why(refused)}", eta())
            self._evict_all(victims, refused)

    def _evict_all(self, victims: list[ModelDefinition], refused: dict[str, str]) -> None:
        try:
            for victim in victims:
                why = self._transitions.evict(victim.name, "budget", wait=True)
                if why is not None:
                    refused[victim.name] = why
        finally:
            self._unclaim(victims)

    def _unclaim(self, victims: list[ModelDefinition]) -> None:
        with self._room:
            self._evicting.difference_update(v.instance_id for v in victims)

    def _plan(self, definition: ModelDefinition, record: InstanceRecord | None, refused: dict[str, str],
              eta: Callable[[], float]) -> list[ModelDefinition]:
        """Victims to evict first, or none: one more engine fits, and is granted (caller holds ``_room``)."""
        snapshot = self._snapshot()
        candidates = [c for c in lru(self._candidates(snapshot, exclude=definition.name))
                      if c.definition.name not in refused and c.definition.instance_id not in self._evicting]
        victims = self._over_count(definition, snapshot, candidates, refused, eta)
        gpus: list[int] = []
        if not victims:
            gpus = self._gpus(definition, record)
            victims = self._over_memory(definition, gpus, snapshot, candidates, refused, eta)
        if victims:
            self._evicting.update(v.instance_id for v in victims)
        else:
            self._granted[definition.instance_id] = _Grant(tuple(gpus), definition.gpu_memory_gib or 0.0)
        return victims

    def _snapshot(self) -> _Snapshot:
        records = self._transitions.manager.list()
        definitions = self._transitions.by_instance()
        return _Snapshot(records, definitions, awake_ids(records, definitions))

    def _over_count(self, definition: ModelDefinition, snapshot: _Snapshot, candidates: list[Candidate],
                    refused: dict[str, str], eta: Callable[[], float]) -> list[ModelDefinition]:
        limit = self._transitions.settings.swap_max_engines
        if limit is None:
            return []
        need = len(snapshot.awake | self._evicting | self._granted.keys()) + 1 - limit
        if need <= 0:
            return []
        if not candidates:
            raise ModelUnavailable(f"model {definition.name!r} cannot start: the budget of {limit} engines "
                                   f"(swap_max_engines) {_HELD}{_why(refused)}", eta())
        return [c.definition for c in candidates[:need]]

    def _over_memory(self, definition: ModelDefinition, gpus: list[int], snapshot: _Snapshot,
                     candidates: list[Candidate], refused: dict[str, str],
                     eta: Callable[[], float]) -> list[ModelDefinition]:
        budget, need = self._transitions.settings.swap_gpu_memory_gib, definition.gpu_memory_gib
        if budget is None or not need:
            return []
        usage = self._usage(snapshot)
        gpus_of = {r.id: r.gpus for r in snapshot.records}
        for gpu in gpus:
            _check_fits(definition, need, budget)
            used = usage.get(gpu, 0.0)
            if used + need <= budget:
                continue
            on_gpu = [c.definition for c in candidates if gpu in gpus_of.get(c.definition.instance_id, [])]
            if not on_gpu:
                raise ModelUnavailable(
                    f"model {definition.name!r} needs {need:g} GiB on GPU {gpu}, where {used:g} of the {budget:g} "
                    f"GiB budget (swap_gpu_memory_gib) {_HELD}{_why(refused)}", eta())
            return on_gpu[:1]
        return []

    def _gpus(self, definition: ModelDefinition, record: InstanceRecord | None) -> list[int]:
        if self._transitions.settings.swap_gpu_memory_gib is None or not definition.gpu_memory_gib:
            return []
        if record is not None:
            return list(record.gpus)
        return predicted_gpus(definition, self._transitions.manager)

    def _usage(self, snapshot: _Snapshot) -> dict[int, float]:
        """GiB held per GPU: awake engines, engines being evicted, and starts granted."""
        usage = gpu_usage(snapshot.records, snapshot.definitions, also=self._evicting)
        for instance_id, grant in self._granted.items():
            if instance_id not in snapshot.awake:
                for gpu in grant.gpus:
                    usage[gpu] = usage.get(gpu, 0.0) + grant.gib
        return usage

    def _candidates(self, snapshot: _Snapshot, *, exclude: str) -> list[Candidate]:
        by_id = {record.id: record for record in snapshot.records}
        found = []
        for definition in snapshot.definitions.values():
            record = by_id.get(definition.instance_id)
            if definition.name == exclude or model_state(definition, record)[0] != "running":
                continue
            found.append(Candidate(definition, False, self._transitions.state.used_at(definition.name)))
        return found

    def sizes(self) -> dict[str, int]:
        with self._room:
            return {"granted": len(self._granted), "evicting": len(self._evicting)}

    # -- sleepers and idle models -------------------------------------------------------------

    def trim_sleepers(self) -> None:
        """Park the longest-unused sleeping models beyond ``swap_max_asleep``."""
        limit = self._transitions.settings.swap_max_asleep
        if limit is None:
            return
        records = {record.id: record for record in self._transitions.manager.list()}
        sleepers = [Candidate(d, True, self._transitions.state.used_at(d.name)) for d in self._transitions.store.all()
                    if is_asleep(d, records.get(d.instance_id))]
        for candidate in lru(sleepers)[: max(0, len(sleepers) - limit)]:
            self._transitions.park_if_free(candidate.definition, "budget")

    def idle_round(self) -> None:
        """Sleep or park models unused for their idle timeout, park models asleep too long, trim sleepers."""
        now = time.time()
        hands, settings = self._transitions, self._transitions.settings
        records = {record.id: record for record in hands.manager.list()}
        for definition in hands.store.all():
            state, _ = model_state(definition, records.get(definition.instance_id))
            action = idle_action(definition, state, now=now, last_used=hands.state.used_at(definition.name, now),
                                 idle_timeout=settings.swap_idle_timeout, asleep_timeout=settings.swap_asleep_timeout)
            if action is None:
                continue
            if state == "running":
                hands.evict(definition.name, "idle", wait=False, action=action)
            else:
                hands.park_if_free(definition, "idle")
        self.trim_sleepers()


def _check_fits(definition: ModelDefinition, need: float, budget: float) -> None:
    if need > budget:
        raise ModelStateConflict(
            f"model {definition.name!r} needs {need:g} GiB per GPU (gpu_memory_gib), more than the whole "
            f"{budget:g} GiB budget (swap_gpu_memory_gib); lower its gpu_memory_gib or raise the budget")


def _why(refused: dict[str, str]) -> str:
    """The models that were not evicted, and why, for an error message."""
    if not refused:
        return ""
    return "; not evicted: " + "; ".join(f"{name!r}: {why}" for name, why in refused.items())
